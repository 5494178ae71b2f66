"""The shipped toy θ0: the file the quickstart uses instead of pre-training, and its manifest."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from benchmark.model.pretrained import base_key, check_weights_available, ensure_base_model, load_base_model
from benchmark.results.storage import StorageRoot
from benchmark.spec.schema import ModelSpec, PretrainSpec, load_spec, quickstart_spec_path
from benchmark.toy import shipped
from benchmark.toy.model import toy_model_config


@pytest.fixture
def manifest():
    m = shipped.shipped_manifest()
    assert m is not None, f"no manifest next to {shipped.SHIPPED_WEIGHTS}"
    return m


@pytest.fixture
def relocated(tmp_path, monkeypatch):
    """A private copy of the shipped pair, which the harness is pointed at (so it can be damaged)."""
    weights = tmp_path / shipped.SHIPPED_WEIGHTS.name
    shutil.copyfile(shipped.SHIPPED_WEIGHTS, weights)
    shutil.copyfile(shipped.manifest_path(shipped.SHIPPED_WEIGHTS), shipped.manifest_path(weights))
    monkeypatch.setattr(shipped, "SHIPPED_WEIGHTS", weights)
    return weights


def test_shipped_file_matches_its_manifest_and_is_small(manifest):
    assert shipped.sha256_file(shipped.SHIPPED_WEIGHTS) == manifest["sha256"]
    assert shipped.SHIPPED_WEIGHTS.stat().st_size == manifest["bytes"] < 20e6
    assert "toy pretrain" in manifest["command"]


def test_shipped_file_serves_the_quickstarts_recipe_and_architecture(manifest):
    """The default recipe, the quickstart's model entry and the manifest name the same θ0 key."""
    quickstart = load_spec(quickstart_spec_path()).models[0]
    assert manifest["key"] == base_key(quickstart) == base_key(ModelSpec(name="ww-toy-vit", pretrained="toy"))
    assert manifest["recipe"] == quickstart.pretrain.model_dump() == PretrainSpec().model_dump()
    assert manifest["model_config"] == toy_model_config()


def test_the_quickstart_gets_the_shipped_weights_without_pretraining(tmp_path, manifest):
    spec = load_spec(quickstart_spec_path()).models[0]
    storage = StorageRoot.at(tmp_path / "root")
    assert ensure_base_model(spec, storage) == {"shipped": 1.0}
    assert ensure_base_model(spec, storage) == {"cached": 1.0}
    from safetensors.torch import load_file

    expected = load_file(str(shipped.SHIPPED_WEIGHTS))
    loaded = load_base_model(spec, storage).model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_another_recipe_has_another_key_and_is_not_served(manifest):
    other = ModelSpec(name="ww-toy-vit", pretrained="toy", pretrain={**manifest["recipe"], "steps": 7})
    assert base_key(other) != manifest["key"]
    assert shipped.shipped_for(base_key(other)) is None


def test_a_corrupted_shipped_file_is_refused_with_the_fix(relocated, manifest, tmp_path):
    data = bytearray(relocated.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor: still a loadable safetensors file
    relocated.write_bytes(bytes(data))
    spec = load_spec(quickstart_spec_path()).models[0]
    with pytest.raises(shipped.CorruptWeightsError) as info:
        check_weights_available(spec)  # the driver's check, before any Ray work
    text = str(info.value)
    assert "corrupted" in text and str(relocated) in text and "run_bench.py toy pretrain" in text
    assert "\n" not in text
    with pytest.raises(shipped.CorruptWeightsError):
        ensure_base_model(spec, StorageRoot.at(tmp_path / "root"))
    assert not (tmp_path / "root" / "cache" / "pretrained").exists() or not any(
        (tmp_path / "root" / "cache" / "pretrained").rglob("*.safetensors")
    )


def test_a_missing_shipped_file_is_refused_when_its_manifest_is_there(relocated):
    relocated.unlink()
    with pytest.raises(shipped.CorruptWeightsError, match="missing.*toy pretrain"):
        shipped.load_shipped_state()


def test_the_cli_reports_a_corrupted_file_on_one_line(relocated, tmp_path, capsys):
    from benchmark.cli import main

    relocated.write_bytes(relocated.read_bytes()[:-100])  # truncated copy
    code = main(["run", "--root", str(tmp_path / "root")])
    out = capsys.readouterr().out
    assert code == 2
    assert "error:" in out and "corrupted" in out and "toy pretrain" in out


def test_manifest_is_plain_json_with_the_recipe(manifest):
    assert json.loads(json.dumps(manifest)) == manifest
    assert set(manifest["recipe"]) == set(PretrainSpec.model_fields)


def test_a_normal_install_carries_the_shipped_pair():
    """The wheel's package data names both files (an editable install reads the tree itself)."""
    import re
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    text = (root / "pyproject.toml").read_text()  # tomllib is 3.11+, the project supports 3.10
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    patterns = re.findall(r'"([^"]+)"', re.search(r"^benchmark\s*=\s*\[(.*)\]", section, re.M).group(1))
    for path in (shipped.SHIPPED_WEIGHTS, shipped.manifest_path(shipped.SHIPPED_WEIGHTS)):
        relative = path.relative_to(root / "benchmark").as_posix()
        assert any(fnmatch(relative, p) for p in patterns), (relative, patterns)


def test_shipped_theta0_reads_every_quickstart_task_but_not_through_the_tasks_sensor(monkeypatch):
    """The world's premise, both halves. Without the tasks' sensor shift θ0 reads every task through
    its text head well above chance (its features are real); through the sensor its zero-shot drops
    far, the headroom experts recover. Both margins asked (10 points) are well under the measured
    ones (README, "The toy world")."""
    from benchmark.data import loaders as data
    from benchmark.model.heads import zeroshot_head
    from benchmark.spec.schema import DataSpec
    from benchmark.toy import create_toy_model, suite, toy_tokenizer
    from benchmark.trials.evaluation import evaluate

    model = create_toy_model(seed=0)
    model.load_state_dict(shipped.load_shipped_state())
    tokenizer = toy_tokenizer()
    quickstart = load_spec(quickstart_spec_path()).setups[0]
    small = DataSpec(n_train=1, n_test=300, seed=quickstart.data.seed)
    sensor = suite.TASK_SHIFT
    assert sensor != "none"
    mean = {}
    for shift in (sensor, "none"):
        monkeypatch.setattr(suite, "TASK_SHIFT", shift)
        accuracies = []
        for task in quickstart.tasks:
            images, labels = data.load_split(task, "test", small)
            head = zeroshot_head(model, tokenizer, data.classnames(task), data.templates(task))
            chance = 1.0 / len(data.classnames(task))
            accuracies.append(evaluate(model, head, images, labels)["accuracy"])
            if shift == "none":
                assert accuracies[-1] > chance + 0.10, (task, accuracies[-1], chance)
        mean[shift] = sum(accuracies) / len(accuracies)
    assert mean[sensor] < mean["none"] - 0.10, mean
