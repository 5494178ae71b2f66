"""Several experts in one Ray Train run (``resources.experts_per_fit``): the same experts as one run
each, packs that respect sequential chains, and one expert's failure kept to itself."""

from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file

from benchmark.experts import store as expert_store
from benchmark.experts.training import fit_experts, make_packs
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import ExpertJob, build_plan
from benchmark.spec.schema import parse_spec
from tests.conftest import tiny_spec_dict


def _job(key: str, init_from: str | None = None) -> ExpertJob:
    return ExpertJob(
        key=key,
        model={},
        base_key="b",
        pretrained_label="p",
        setup="s",
        task=key,
        seed=0,
        data={},
        finetune={},
        init_from=init_from,
        init_task=init_from,
    )


def _keys(packs: list[list[ExpertJob]]) -> list[list[str]]:
    return [[job.key for job in pack] for pack in packs]


def test_independent_experts_are_packed_in_order_and_one_per_run_by_default():
    jobs = [_job(k) for k in "abcdefg"]
    assert _keys(make_packs(jobs, 3)) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert _keys(make_packs(jobs, 1)) == [[k] for k in "abcdefg"]


def test_a_chain_is_packed_with_its_own_splits_only():
    # two sequential chains (x1 → x2 → x3, y1 → y2) interleaved with independent experts
    jobs = [_job("x1"), _job("i1"), _job("x2", "x1"), _job("y1"), _job("x3", "x2"), _job("i2"), _job("y2", "y1")]
    assert _keys(make_packs(jobs, 2)) == [["x1", "x2"], ["x3"], ["i1", "i2"], ["y1", "y2"]]
    assert _keys(make_packs(jobs, 5)) == [["x1", "x2", "x3"], ["i1", "i2"], ["y1", "y2"]]


def _fresh_root(finished: StorageRoot, tmp_path) -> StorageRoot:
    """The finished run's caches (θ0, tensors, heads), none of its experts or results."""
    root = tmp_path / "root"
    shutil.copytree(finished.root, root, ignore=shutil.ignore_patterns("runs", "results", "experts"))
    return StorageRoot.at(root)


@pytest.mark.ray
def test_a_pack_trains_bit_identical_experts_to_one_run_each(finished_tiny_run, tmp_path):
    spec, finished, _, _ = finished_tiny_run  # its experts were trained one per run (the default)
    storage = _fresh_root(finished, tmp_path)
    packed = parse_spec({**tiny_spec_dict(), "resources": {**spec.resources.model_dump(), "experts_per_fit": 3}})
    jobs = build_plan(packed).experts
    assert [job.key for job in jobs] == [job.key for job in build_plan(spec).experts]  # packing is not in the key
    outcomes = fit_experts(jobs, storage, packed.resources, log=lambda message: None)
    assert [outcome.ok for outcome in outcomes] == [True] * len(jobs), [outcome.detail for outcome in outcomes]
    for job in jobs:
        mine, theirs = load_file(str(job.path(storage))), load_file(str(job.path(finished)))
        assert mine.keys() == theirs.keys()
        assert all(mine[name].equal(theirs[name]) for name in mine), job.task
        assert expert_store.read_manifest(job, storage)["metrics"]["test_accuracy"] == pytest.approx(
            expert_store.read_manifest(job, finished)["metrics"]["test_accuracy"]
        )
    assert not list((storage.runs / "experts").glob("experts-*")), "the pack's run folder outlived it"


@pytest.mark.ray
def test_a_failing_expert_fails_alone_and_its_pack_keeps_the_others(finished_tiny_run, tmp_path):
    spec, finished, _, _ = finished_tiny_run
    storage = _fresh_root(finished, tmp_path)
    packed = parse_spec({**tiny_spec_dict(), "resources": {**spec.resources.model_dump(), "experts_per_fit": 3}})
    jobs = build_plan(packed).experts
    bad = jobs[1]
    heads = [p for p in storage.cache.rglob(f"{bad.task}-*.safetensors") if p.parent.parent.name == "heads"]
    assert len(heads) == 1, heads
    heads[0].write_bytes(b"not a safetensors file")  # the middle expert of the pack cannot load its head
    messages: list[str] = []
    outcomes = {o.job.key: o for o in fit_experts(jobs, storage, packed.resources, log=messages.append)}
    assert {key for key, o in outcomes.items() if o.ok} == {jobs[0].key, jobs[2].key}
    assert not outcomes[bad.key].ok and "blocked" not in str(outcomes[bad.key].detail)
    assert expert_store.is_done(jobs[0], storage) and expert_store.is_done(jobs[2], storage)
    assert not expert_store.is_done(bad, storage)
    assert any("retrying its unfinished ones one per run" in m for m in messages), messages


@pytest.mark.ray
def test_a_sequential_chain_in_one_pack_continues_each_split_from_the_stored_previous_one(ray_session, tmp_path):
    from rich.console import Console

    from benchmark.pipeline import run_spec

    spec_dict = tiny_spec_dict(mergers=["task_arithmetic"], poolings=["none"])
    spec_dict["setups"] = [
        {
            "name": "cil",
            "kind": "cil",
            "dataset": "digits",
            "n_splits": 2,
            "data": {"n_train": 256, "n_test": 128, "seed": 0},
            "finetune": {"mode": "sequential", "steps": 6, "batch_size": 32, "lr": 1e-4, "warmup": 2},
        }
    ]
    spec_dict["resources"] = {**spec_dict["resources"], "experts_per_fit": 2}
    packed = parse_spec(spec_dict)
    storage = StorageRoot.at(tmp_path / "packed")
    summary = run_spec(packed, storage, console=Console(record=True, width=200))
    assert summary.experts_trained == 2 and not summary.experts_failed
    chain = build_plan(packed).experts
    assert chain[1].init_from == chain[0].key
    # the same chain, one Ray Train run per split, on the packed run's caches
    alone = _fresh_root(storage, tmp_path / "alone")
    outcomes = fit_experts(chain, alone, packed.resources.model_copy(update={"experts_per_fit": 1}), log=print)
    assert all(o.ok for o in outcomes)
    for job in chain:
        mine, theirs = load_file(str(job.path(storage))), load_file(str(job.path(alone)))
        assert all(mine[name].equal(theirs[name]) for name in mine), job.task
    first, second = (load_file(str(job.path(storage))) for job in chain)
    assert not all(first[name].equal(second[name]) for name in first)  # the second split did train
