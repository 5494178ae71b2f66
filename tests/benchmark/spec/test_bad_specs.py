"""Malformed specs: each is refused at spec time with one line naming the problem and the fix.

A bad value found while validating costs nothing; the same value found mid-grid costs the fine-tunes
before it. So every case here must fail in ``parse_spec`` — before a plan exists — and its message
must carry both what is wrong (key path, value) and what to write instead.
"""

from __future__ import annotations

import copy

import pytest
import yaml

import ww
from benchmark.cli import main
from benchmark.spec.schema import SpecError, load_spec, parse_spec
from tests.conftest import tiny_spec_dict

DROP = object()


def _set(spec: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DROP:
        del node[last]
    else:
        node[last] = value


def _dg(domains=None, dataset="objects") -> list[dict]:
    setup = {"name": "dg", "kind": "dg", "dataset": dataset}
    return [{**setup, "domains": domains} if domains is not None else setup]


def _cil(n_splits, **finetune) -> list[dict]:
    return [{"name": "cil", "kind": "cil", "dataset": "digits", "n_splits": n_splits, "finetune": finetune}]


def _ties(**fields) -> dict:
    return {"name": "ties", **fields}


# (id, {key path: new value}, text naming the problem, text naming the fix)
CASES = [
    # unknown keys
    ("unknown-top-key", {"mergers": DROP, "mergerz": ["ties"]}, "unknown key 'mergerz'", "did you mean 'mergers'"),
    ("unknown-nested-key", {"setups.0.finetune.stepz": 3}, "setups.0.finetune.stepz", "did you mean 'steps'"),
    ("unknown-resources-key", {"resources.trial_cpu": 1}, "unknown key 'trial_cpu'", "did you mean 'trial_cpus'"),
    # wrong types
    ("seeds-not-a-list", {"seeds": "0"}, "seeds: Input should be a valid list", "got '0'"),
    ("steps-not-an-int", {"setups.0.finetune.steps": "ten"}, "setups.0.finetune.steps", "valid integer"),
    ("tasks-not-a-list", {"setups.0.tasks": "digits"}, "setups.0.tasks", "valid list, got 'digits'"),
    ("models-a-mapping", {"models": {"name": "ww-toy-vit", "pretrained": "toy"}}, "models", "valid list"),
    # empty axes
    ("no-models", {"models": []}, "models: is empty", "list at least one value"),
    ("no-setups", {"setups": []}, "setups: is empty", "list at least one value"),
    ("no-mergers", {"mergers": []}, "mergers: is empty", "list at least one value"),
    ("no-poolings", {"poolings": []}, "poolings: is empty", "list at least one value"),
    ("no-variants", {"variants": []}, "variants: is empty", "list at least one value"),
    ("no-seeds", {"seeds": []}, "seeds: is empty", "list at least one value"),
    # unknown names
    ("unknown-merger", {"mergers.1": "tiess"}, "unknown merger 'tiess'", "did you mean 'ties'"),
    ("unknown-pooling", {"poolings": ["avg", "avgg"]}, "unknown pooling 'avgg'", "did you mean 'avg'"),
    (
        "unknown-model",
        {"models.0": {"name": "ViT-B-33"}},
        "unknown open_clip model 'ViT-B-33'",
        "did you mean 'ViT-B-32'",
    ),
    (
        "unknown-tag",
        {"models.0": {"name": "ViT-B-32", "pretrained": "opneai"}},
        "no pretrained tag 'opneai'",
        "did you mean 'openai'",
    ),
    ("toy-tag-on-real-model", {"models.0.name": "ViT-B-32"}, "pretrained: toy needs model", "'ww-toy-vit'"),
    (
        "pretrain-on-real-model",
        {"models.0": {"name": "ViT-B-32", "pretrain": {}}},
        "'pretrain' applies only",
        "pretrained: toy",
    ),
    ("unknown-dataset", {"setups.0.tasks": ["digits", "digitz"]}, "unknown dataset 'digitz'", "did you mean 'digits'"),
    ("unknown-domain", {"setups": _dg(["photo", "sketch", "sketchy"])}, "no domain 'sketchy'", "did you mean 'sketch'"),
    ("unknown-variant", {"variants": ["collab"]}, "variants.0", "'collaborative' or 'plain', got 'collab'"),
    ("unknown-precision", {"setups.0.finetune.precision": "fp8"}, "precision", "'bf16' or 'fp16', got 'fp8'"),
    # merger hyper-parameters (ww's registry, consulted at spec time)
    ("param-unknown", {"mergers.1": _ties(params={"kk": 0.2})}, "no hyper-parameter 'kk'", "did you mean 'k'"),
    ("param-out-of-range", {"mergers.1": _ties(params={"k": 1.5})}, "k must lie in (0.0, 1.0]", "got 1.5"),
    ("param-wrong-type", {"mergers.1": _ties(params={"k": "big"})}, "k must be a finite number", "got 'big'"),
    (
        "param-of-another-merger",
        {"mergers.0": {"name": "task_arithmetic", "params": {"k": 0.2}}},
        "task_arithmetic has no hyper-parameter 'k'",
        "Valid hyper-parameters: none",
    ),
    # λ grids
    ("lambdas-empty", {"mergers.1": _ties(lambdas=[])}, "lambdas is empty", "omit it"),
    ("lambdas-negative", {"mergers.1": _ties(lambdas=[-0.1, 0.2])}, "positive finite numbers, got [-0.1]", "drop them"),
    ("lambdas-zero", {"mergers.1": _ties(lambdas=[0.0, 0.5])}, "positive finite numbers, got [0.0]", "drop them"),
    ("lambdas-infinite", {"mergers.1": _ties(lambdas=[0.5, float("inf")])}, "got [inf]", "drop them"),
    ("lambdas-unsorted", {"mergers.1": _ties(lambdas=[0.3, 0.1, 0.2])}, "must be increasing", "write [0.1, 0.2, 0.3]"),
    (
        "lambdas-duplicated",
        {"mergers.1": _ties(lambdas=[0.2, 0.2])},
        "duplicated lambdas: [0.2]",
        "list each value once",
    ),
    ("fixed-lambda-zero", {"fixed_lambda": 0}, "fixed_lambda", "greater than 0, got 0"),
    ("fixed-lambda-nan", {"fixed_lambda": float("nan")}, "fixed_lambda", "finite number, got nan"),
    # duplicated axis values
    ("duplicated-seeds", {"seeds": [0, 1, 0]}, "duplicated seeds: [0]", "list each value once"),
    (
        "duplicated-poolings",
        {"poolings": ["avg", "none", "avg"]},
        "duplicated poolings: ['avg']",
        "list each value once",
    ),
    ("duplicated-mergers", {"mergers": ["ties", "ties"]}, "duplicated mergers", "list each value once"),
    ("duplicated-variants", {"variants": ["plain", "plain"]}, "duplicated variants", "list each value once"),
    (
        "duplicated-tasks",
        {"setups.0.tasks": ["digits", "shapes", "digits"]},
        "duplicated tasks: ['digits']",
        "list each value once",
    ),
    (
        "duplicated-domains",
        {"setups": _dg(["photo", "sketch", "mosaic", "photo"])},
        "duplicated domains: ['photo']",
        "list each value once",
    ),
    (
        "duplicated-setup-names",
        {"setups": _dg() + [{**_dg()[0], "domains": ["photo", "sketch", "mosaic"]}]},
        "duplicated setup names: ['dg']",
        "list each value once",
    ),
    ("duplicated-models", {"models": [tiny_spec_dict()["models"][0]] * 2}, "duplicated models", "list each value once"),
    # setups
    ("cil-split-does-not-divide", {"setups": _cil(3)}, "digits has 10 classes", "choose one of [2, 5, 10]"),
    ("cil-one-split", {"setups": _cil(1)}, "setups.0.n_splits", "greater than or equal to 2, got 1"),
    (
        "dg-two-domains",
        {"setups": _dg(["photo", "sketch"])},
        "needs at least 3 domains",
        "objects has ['photo', 'sketch', 'negative', 'mosaic', 'greyscale']",
    ),
    ("dg-single-domain-dataset", {"setups": _dg(dataset="digits")}, "digits has no domains", "'objects'"),
    ("mtl-one-task", {"setups.0.tasks": ["digits"]}, "setups.0", "needs at least 2 tasks"),
    ("mtl-given-a-dataset", {"setups.0.dataset": "digits"}, "kind mtl does not take ['dataset']", "it takes ['tasks']"),
    ("sequential-outside-cil", {"setups.0.finetune.mode": "sequential"}, "sequential", "use it with kind: cil"),
    ("steps-and-epochs", {"setups.0.finetune.epochs": 2}, "setups.0.finetune", "give steps or epochs, not both"),
    (
        "epochs-missing-a-dataset",
        {"setups.0.finetune.steps": DROP, "setups.0.finetune.epochs": {"digits": 3}},
        "no entry for 'shapes'",
        "add 'shapes: N' or 'default: N'",
    ),
    ("no-training-examples", {"setups.0.data.n_train": 0}, "setups.0.data.n_train", "greater than or equal to 1"),
    # run identity, seeds, resources, plugins
    ("name-with-a-space", {"name": "my run"}, "'my run' has characters", "use only those"),
    ("negative-seed", {"seeds": [-1]}, "seeds.0", "greater than or equal to 0, got -1"),
    (
        "negative-pretrain-seed",
        {"models.0.pretrain.seed": -7},
        "models.0.pretrain.seed",
        "greater than or equal to 0, got -7",
    ),
    ("zero-timeout", {"resources.trial_timeout_s": 0}, "resources.trial_timeout_s", "greater than 0"),
    ("negative-memory-limit", {"resources.trial_memory_gb": -1}, "resources.trial_memory_gb", "greater than 0"),
    (
        "plugin-not-installed",
        {"plugins": ["no_such_lab.mergers"]},
        "cannot import plugin 'no_such_lab.mergers'",
        "put it on PYTHONPATH",
    ),
    (
        "plugin-given-as-a-path",
        {"plugins": ["../my_merger.py"]},
        "'../my_merger.py' is not a module name",
        "not a path",
    ),
]


@pytest.mark.parametrize("changes, problem, fix", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_spec_is_one_line_naming_the_problem_and_the_fix(changes, problem, fix):
    spec = copy.deepcopy(tiny_spec_dict())
    for path, value in changes.items():
        _set(spec, path, value)
    with pytest.raises(SpecError) as info:
        parse_spec(spec, "spec.yaml")
    message = str(info.value)
    assert message.startswith("spec.yaml: ") and len(message.splitlines()) == 1, message
    assert problem in message and fix in message, message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the file is empty"),
        ("- name: tiny\n", "a spec is a YAML mapping"),
        ("name: tiny\nmodels: [\n", "not valid YAML"),
    ],
)
def test_a_file_that_is_not_a_spec_says_what_a_spec_is(tmp_path, text, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_the_cli_prints_one_line_and_exits_2_and_debug_shows_the_traceback(tmp_path, capsys):
    spec = tiny_spec_dict()
    spec["mergers"] = [_ties(params={"k": 1.5})]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    root = tmp_path / "root"
    assert main(["run", str(path), "--root", str(root)]) == 2
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.strip()] == [
        f"error: {path}: mergers.0: ties: k must lie in (0.0, 1.0], got 1.5"
    ]
    assert not root.exists()  # refused before the root was touched
    with pytest.raises(SpecError):
        main(["--debug", "run", str(path), "--root", str(root)])


def test_a_plugin_registers_mergers_before_merger_names_are_checked():
    spec = tiny_spec_dict(plugins=["tests.fault_mergers"], mergers=["fault_nan", "ties"])
    try:
        assert [m.name for m in parse_spec(spec).mergers] == ["fault_nan", "ties"]
    finally:
        import tests.fault_mergers

        tests.fault_mergers.forget()
    assert "fault_nan" not in ww.MERGERS
