"""The three setups of docs/METHODS.md §3: which experts a setup trains and what each trial merges and evaluates."""

from __future__ import annotations

import pytest

from benchmark.data import loaders as data
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import SetupSpec, SpecError, parse_spec
from tests.conftest import tiny_spec_dict


def test_cil_splits_are_contiguous_chunks_of_a_fixed_permutation():
    setup = SetupSpec(name="cil", kind="cil", dataset="digits", n_splits=5)
    tasks = setup.expert_tasks()
    assert tasks == [f"digits[{i}/5]" for i in range(5)]
    chunks = [data.task_classes(t) for t in tasks]
    assert sorted(c for chunk in chunks for c in chunk) == list(range(10))
    assert [c for chunk in chunks for c in chunk] == data.class_order("digits")
    assert [e.task for e in setup.evaluations()] == ["digits"]  # joint head, task-agnostic


def test_cil_split_labels_are_local_to_the_split():
    spec = parse_spec(tiny_spec_dict()).setups[0].data
    images, labels = data.load_split("digits[1/5]", "test", spec)
    assert len(images) == len(labels) > 0
    assert set(labels.tolist()) <= {0, 1}
    names = data.classnames("digits[1/5]")
    full = data.dataset_classnames("digits")
    assert names == tuple(full[c] for c in data.task_classes("digits[1/5]"))


@pytest.mark.parametrize(
    "setup, message",
    [
        ({"kind": "cil", "dataset": "digits", "n_splits": 3}, "must divide"),
        ({"kind": "cil", "dataset": "digitz", "n_splits": 5}, "did you mean 'digits'"),
        ({"kind": "cil", "dataset": "digits"}, "needs ['n_splits']"),
        ({"kind": "mtl", "tasks": ["digits"]}, "at least 2 tasks"),
        ({"kind": "mtl", "tasks": ["digits", "shapes"], "n_splits": 2}, "does not take ['n_splits']"),
        ({"kind": "dg", "dataset": "digits"}, "at least 3 domains"),
        ({"kind": "mtl", "tasks": ["digits", "shapes"], "finetune": {"mode": "sequential"}}, "use it with kind: cil"),
    ],
)
def test_inconsistent_setups_are_refused(setup, message):
    spec = tiny_spec_dict()
    spec["setups"] = [{"name": "bad", **setup}]
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert message in str(info.value)


def test_sequential_chain_links_each_split_to_the_previous_one():
    spec = tiny_spec_dict()
    spec["setups"] = [
        {
            "name": "cil",
            "kind": "cil",
            "dataset": "digits",
            "n_splits": 5,
            "finetune": {"mode": "sequential", "steps": 4},
        }
    ]
    plan = build_plan(parse_spec(spec))
    chain = plan.experts
    assert chain[0].init_from is None
    assert [j.init_from for j in chain[1:]] == [j.key for j in chain[:-1]]
    independent = tiny_spec_dict()
    independent["setups"] = [{**spec["setups"][0], "finetune": {"mode": "independent", "steps": 4}}]
    plan2 = build_plan(parse_spec(independent))
    assert all(j.init_from is None for j in plan2.experts)
    assert plan2.experts[0].key != chain[0].key or plan2.experts[1].key != chain[1].key
