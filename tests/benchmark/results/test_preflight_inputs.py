"""``run --dry-run`` on a machine without the inputs: the plan, then EVERY missing input, exit code 2."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.spec.schema import PRESETS

REPO = Path(__file__).resolve().parents[3]


def test_dry_run_without_weights_or_data_prints_the_plan_and_every_missing_input(tmp_path):
    from benchmark.data.loaders import parse_task
    from benchmark.spec.schema import load_spec

    spec_path = PRESETS / "mtl8.yaml"
    env = {
        **os.environ,
        "WW_DATA_ROOT": str(tmp_path / "no-data"),
        "HF_HOME": str(tmp_path / "no-hf"),
        "COLUMNS": "200",
    }
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "run_bench.py", "run", str(spec_path), "--root", str(tmp_path / "root"), "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Plan for spec" in out and "experts (Ray Train)" in out  # the plan comes first
    assert out.index("Plan for spec") < out.index("inputs are missing")

    spec = load_spec(spec_path)
    datasets = sorted({parse_task(t).dataset for s in spec.setups for t in s.expert_tasks()})
    assert len(datasets) == 8
    assert f"{len(datasets) + 1} inputs are missing" in out  # the weights and each dataset, once
    for dataset in datasets:
        assert f"dataset {dataset} not found" in out, dataset
    assert out.count("To obtain it:") == len(datasets)  # each with how to get it
    assert "pretrained weights ViT-B-32/openai are not on this machine" in out
    assert "open_clip.create_model('ViT-B-32', pretrained='openai')" in out  # the weights' fetch command
    assert not (tmp_path / "root").exists()  # a dry run writes nothing


def test_a_run_without_its_inputs_names_them_all_before_any_work(tmp_path, monkeypatch):
    from rich.console import Console

    from benchmark.pipeline import MissingInputsError, run_spec
    from benchmark.results.storage import StorageRoot
    from benchmark.spec.schema import load_spec

    monkeypatch.setenv("WW_DATA_ROOT", str(tmp_path / "no-data"))
    spec = load_spec(PRESETS / "mtl8.yaml")
    with pytest.raises(MissingInputsError) as raised:
        run_spec(spec, StorageRoot.at(tmp_path / "root"), console=Console(file=io.StringIO()))
    assert sum("dataset" in str(p) for p in raised.value.problems) == 8
    assert not (tmp_path / "root").exists()
