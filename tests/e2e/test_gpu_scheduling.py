"""Trials ask Ray for (fractions of) GPUs: on a cluster of logical GPUs, Tune gives each trial its
share, never runs more trials than the GPUs hold, and a trial without CUDA still runs on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.perf.grid import _scratch_root, trial_reports
from benchmark.pipeline import run_spec
from benchmark.spec.schema import parse_spec
from benchmark.trials.merge_eval import trial_device
from tests.conftest import tiny_spec_dict


def _max_overlap(reports: list[dict]) -> int:
    events = sorted([(r["started_at"], 1) for r in reports] + [(r["ended_at"], -1) for r in reports])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("gpus, most", [(1.0, 2), (0.5, 4)])
def test_trials_get_their_gpu_share_and_never_exceed_the_gpus(finished_tiny_run, tmp_path, gpus, most):
    _, storage, _, _ = finished_tiny_run
    spec = tiny_spec_dict()
    spec["resources"] = {**spec["resources"], "trial_cpus": 0.25, "trial_gpus": gpus}
    scratch = _scratch_root(storage, tmp_path)
    summary = run_spec(parse_spec(spec), scratch)
    assert summary.trials_run == 6
    reports = trial_reports(Path(scratch.runs) / "grid")
    assert len(reports) == 6 and all(r["status"] == "ok" for r in reports)
    assert all(len(r["gpu_ids"]) == 1 and r["gpu_ids"][0] in ("0", "1") for r in reports)
    # the session has 2 logical GPUs: CPUs (0.25 each) would allow 16 trials at once
    assert _max_overlap(reports) <= most


def test_a_worker_without_a_gpu_evaluates_on_the_cpu(ray_session):
    assert trial_device().type == "cpu"
