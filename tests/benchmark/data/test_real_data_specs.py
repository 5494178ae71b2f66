"""The paper's specs (mtl8, cil_cifar100, dg_domainnet) with data and weights "in place" (faked)."""

from __future__ import annotations

import pytest

from benchmark import cli
from benchmark.data import MTL8, DatasetMissingError, fake
from benchmark.data import loaders as data
from benchmark.model import pretrained as models
from benchmark.model.pretrained import MissingWeightsError
from benchmark.spec.schema import PRESETS, load_spec

SPECS = PRESETS
NAMES = ("mtl8", "cil_cifar100", "dg_domainnet")


@pytest.fixture(scope="module")
def fake_machine(tmp_path_factory):
    """A data root with every dataset the three specs read, and a Hugging Face cache holding ViT-B-32/openai."""
    root = tmp_path_factory.mktemp("machine")
    for name in (*MTL8, "CIFAR100", "DomainNet"):
        fake.write_fake(name, root / "data")
    snapshot = root / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "c0ffee"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights stand-in: the dry run only resolves them")
    (root / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "refs").mkdir()
    (root / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "refs" / "main").write_text("c0ffee")
    return root


@pytest.fixture
def on_fake_machine(fake_machine, monkeypatch):
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(fake_machine / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_machine / "hub"))
    with fake.skip_torchvision_md5():
        yield fake_machine


def _tasks(spec) -> set[str]:
    tasks = set()
    for setup in spec.setups:
        tasks |= set(setup.expert_tasks()) | {e.task for e in setup.evaluations()}
    return tasks


def test_specs_describe_the_papers_setups_for_vit_b_32():
    mtl, cil, dg = (load_spec(SPECS / f"{n}.yaml") for n in NAMES)
    for spec in (mtl, cil, dg):
        assert [(m.name, m.pretrained) for m in spec.models] == [("ViT-B-32", "openai")]
    assert tuple(mtl.setups[0].tasks) == MTL8
    setup = cil.setups[0]
    assert (setup.dataset, setup.n_splits, setup.finetune.mode) == ("CIFAR100", 20, "sequential")
    assert cil.setups[0].evaluations()[0].task == "CIFAR100"
    assert dg.setups[0].dataset == "DomainNet" and len(dg.setups[0].expert_tasks()) == 6


@pytest.mark.parametrize("name", NAMES)
def test_spec_passes_preflight_and_dry_run_with_data_and_weights_in_place(on_fake_machine, name, tmp_path, capsys):
    spec = load_spec(SPECS / f"{name}.yaml")
    for model in spec.models:
        models.check_weights_available(model)
    for task in sorted(_tasks(spec)):
        data.check_task_data(task)
    assert cli.main(["run", str(SPECS / f"{name}.yaml"), "--dry-run", "--root", str(tmp_path)]) == 0
    assert "--dry-run" in capsys.readouterr().out


def test_preflight_names_missing_data_and_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    spec = load_spec(SPECS / "mtl8.yaml")
    with pytest.raises(DatasetMissingError, match="SUN397 not found under data root"):
        data.check_task_data(spec.setups[0].tasks[0])
    with pytest.raises(MissingWeightsError, match="vit_base_patch32_clip_224.openai"):
        models.check_weights_available(spec.models[0])
