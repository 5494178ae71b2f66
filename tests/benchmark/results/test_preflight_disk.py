"""A full disk or an unwritable root fails at once, with one line saying what to do, before any work."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest
import yaml
from rich.console import Console

from benchmark.cli import main
from benchmark.pipeline import run_spec
from benchmark.results.preflight import InsufficientSpaceError, encoder_bytes, estimate_disk
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import ModelSpec, parse_spec
from benchmark.toy import create_toy_model
from tests.conftest import tiny_spec_dict

Usage = namedtuple("Usage", "total used free")


def _no_work(monkeypatch):
    monkeypatch.setattr("benchmark.pipeline.init_ray", lambda: pytest.fail("work started"))


def _estimate(spec):
    plan = build_plan(spec)
    return plan, estimate_disk(plan, plan.experts, plan.trials)


def test_the_estimate_covers_every_expert_its_checkpoint_and_the_trials():
    spec = parse_spec(tiny_spec_dict())
    plan, estimate = _estimate(spec)
    encoder = encoder_bytes(spec.models[0])
    assert encoder == 4 * sum(t.numel() for t in create_toy_model(seed=0).visual.state_dict().values())
    assert estimate.total >= len(plan.experts) * encoder + len(plan.trials) * 1024

    def total(**finetune):
        spec_dict = tiny_spec_dict()
        spec_dict["setups"][0]["finetune"].update(finetune)
        return _estimate(parse_spec(spec_dict))[1].total

    none = total(checkpoint_every=0)
    assert total() == none  # 8 steps: too short for the default cadence to checkpoint
    # kept: one checkpoint (encoder + AdamW's two moments) per expert
    assert total(checkpoint_every=2, keep_checkpoints=True) == none + 3 * len(plan.experts) * encoder
    # deleted once each expert is written: two at most (the new and the replaced one) per running expert
    transient = total(checkpoint_every=2) - none
    assert transient > 0 and transient % (2 * 3 * encoder) == 0
    assert transient <= 2 * 3 * len(plan.experts) * encoder


def test_a_real_encoder_is_sized_from_its_checkpoint_without_building_the_model(tmp_path):
    from benchmark.data import fake

    for suffix in (".safetensors", ".pt"):
        model = fake.save_tiny_clip(tmp_path / f"tiny{suffix}")
        visual = sum(t.numel() for t in model.visual.state_dict().values())
        assert encoder_bytes(ModelSpec(name=fake.TINY_CLIP, pretrained=str(tmp_path / f"tiny{suffix}"))) == 4 * visual


def test_a_disk_too_small_for_the_plan_is_refused_naming_free_and_needed_bytes(tmp_path, monkeypatch):
    spec = parse_spec(tiny_spec_dict())
    _, estimate = _estimate(spec)
    free = estimate.total // 3
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * estimate.total, 9 * estimate.total, free))
    _no_work(monkeypatch)
    storage = StorageRoot.at(tmp_path / "root")
    with pytest.raises(InsufficientSpaceError) as info:
        run_spec(spec, storage, console=Console(quiet=True))
    message = str(info.value)
    assert f"has {free / 2**20:.1f} MB free ({free} bytes)" in message
    assert "needs about" in message and f"({estimate.total} bytes: 3 expert(s)" in message
    assert "pass --root on a disk with more space" in message
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file()]  # nothing written


def test_a_disk_with_room_for_the_plan_passes_the_check(tmp_path, monkeypatch):
    spec = parse_spec(tiny_spec_dict())
    _, estimate = _estimate(spec)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2 * estimate.total, 0, estimate.total))

    class Started(Exception):
        pass

    def started():
        raise Started

    monkeypatch.setattr("benchmark.pipeline.init_ray", started)
    with pytest.raises(Started):  # got past the check to the first piece of work
        run_spec(spec, StorageRoot.at(tmp_path / "root"), console=Console(quiet=True))


def test_the_cli_reports_a_full_disk_in_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict()))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**12, 10**12 - 4096, 4096))
    _no_work(monkeypatch)
    assert main(["run", str(path), "--root", str(tmp_path / "root")]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "has 4.0 KB free (4096 bytes)" in lines[0] and "--root" in lines[0]


def test_a_dry_run_shows_the_estimate_and_warns_without_failing(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**12, 10**12 - 4096, 4096))
    console = Console(record=True, width=300)
    run_spec(parse_spec(tiny_spec_dict()), StorageRoot.at(tmp_path / "root"), dry_run=True, console=console)
    text = console.export_text()
    assert "disk: about" in text and "4.0 KB free — not enough" in text


def test_an_unwritable_root_is_one_line_with_exit_code_2_before_any_work(tmp_path, monkeypatch, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict()))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a root inside a regular file cannot be created, even by root
    _no_work(monkeypatch)
    assert main(["run", str(path), "--root", str(blocker / "root")]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("error:")]
    assert len(error) == 1 and f"storage root {blocker / 'root'} is not writable" in error[0]
    assert "pass --root with a directory or bucket prefix you can write" in error[0]
