"""SIGKILL the driver mid-run, run the same command again: the grid completes, every trial exactly once.

Real subprocesses, real kills (of the driver's whole process group, as a crashed machine would),
at two points: while experts fine-tune, and while the grid runs. Also two runs on one root at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.experts import store as expert_store
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from tests.conftest import tiny_spec_dict

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path, finetune: dict | None = None) -> tuple[Path, dict]:
    spec = tiny_spec_dict(name="killme")
    if finetune is not None:
        spec["setups"][0]["finetune"] = finetune
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, spec


def _start(spec_path: Path, root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, str(REPO / "run_bench.py"), "run", str(spec_path), "--root", str(root)],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, condition, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run finished (exit {proc.returncode}) before the kill point")
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(2)  # let orphaned Ray processes notice their driver is gone
            return
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("kill point never reached")


def _assert_complete(spec: dict, root: Path) -> None:
    storage = StorageRoot.at(root)
    plan = build_plan(parse_spec(spec))
    assert all(expert_store.is_done(job, storage) for job in plan.experts)
    status = results.trial_status(storage)
    assert {t.key for t in plan.trials} <= set(status) and all(status[t.key] == "ok" for t in plan.trials)
    table = results.read_results(storage)
    trial_rows = [r for r in table.to_pylist() if r["lambda_policy"] != "reference"]
    per_trial = {}
    for row in trial_rows:
        per_trial.setdefault(row["trial_key"], []).append(row["eval_task"])
    n_tasks = len(spec["setups"][0]["tasks"])
    assert set(per_trial) == {t.key for t in plan.trials}
    assert all(sorted(tasks) == sorted(set(tasks)) and len(tasks) == n_tasks for tasks in per_trial.values())


def _manifests(root: Path) -> int:
    return len(list((root / "experts").rglob("*.manifest.json"))) if (root / "experts").exists() else 0


def _parts(root: Path) -> int:
    found = list((root / "results").rglob("*.parquet")) if (root / "results").exists() else []
    return len([p for p in found if not p.name.startswith((".", "zeroshot-", "expert-"))])


def _root_with_experts(finished_tiny_run, tmp_path: Path) -> Path:
    """A root holding the finished run's θ0, tensors, heads and experts, but no results yet."""
    _, storage, _, _ = finished_tiny_run
    root = tmp_path / "root"
    shutil.copytree(storage.root, root, ignore=shutil.ignore_patterns("runs", "results"))
    return root


def _checkpoints(root: Path) -> int:
    """Checkpoints Ray Train has recorded (a run resumes from its snapshot, written after the folder)."""
    runs = root / "runs" / "experts"
    snapshots = list(runs.glob("*/checkpoint_manager_snapshot.json")) if runs.exists() else []
    recorded = 0
    for snapshot in snapshots:
        try:
            recorded += json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
        except (OSError, ValueError):
            continue  # being rewritten
    return recorded


def test_sigkill_during_fine_tuning_then_rerun_resumes_from_checkpoints(tmp_path):
    # long enough fine-tunes (many steps each) that the kill lands between two checkpoints
    spec_path, spec = _spec(
        tmp_path, finetune={"steps": 240, "batch_size": 32, "lr": 1e-4, "warmup": 2, "checkpoint_every": 20}
    )
    root = tmp_path / "root"
    first = _start(spec_path, root, tmp_path / "first.log")
    _kill_when(first, lambda: _checkpoints(root) >= 1)
    assert _manifests(root) < 3, "all experts finished before the kill: the kill point was missed"
    second = _start(spec_path, root, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    _assert_complete(spec, root)
    storage = StorageRoot.at(root)
    resumed = [
        expert_store.read_manifest(job, storage)["metrics"]["resumed_from_step"]
        for job in build_plan(parse_spec(spec)).experts
    ]
    # the expert that had checkpointed picked up from its last checkpoint instead of step 0
    assert max(resumed) >= 20 and all(step % 20 == 0 for step in resumed), resumed


def test_sigkill_during_the_grid_then_rerun_completes(tmp_path, finished_tiny_run):
    spec_path, spec = _spec(tmp_path)
    root = _root_with_experts(finished_tiny_run, tmp_path)
    first = _start(spec_path, root, tmp_path / "first.log")
    _kill_when(first, lambda: _parts(root) >= 1)
    assert _parts(root) < len(build_plan(parse_spec(spec)).trials), "the grid finished before the kill"
    second = _start(spec_path, root, tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    _assert_complete(spec, root)


def test_two_runs_on_one_root_at_once_do_not_corrupt_each_other(tmp_path, finished_tiny_run):
    spec_path, spec = _spec(tmp_path)
    root = _root_with_experts(finished_tiny_run, tmp_path)
    runs = [_start(spec_path, root, tmp_path / f"run{i}.log") for i in range(2)]
    for i, run in enumerate(runs):
        assert run.wait(timeout=900) == 0, (tmp_path / f"run{i}.log").read_text()[-3000:]
    _assert_complete(spec, root)
