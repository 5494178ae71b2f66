"""``run_bench.py perf grid``: the overhead arithmetic on hand-made reports, and a real run on the
tiny spec whose warm workers read nothing from the root after their first trial."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from benchmark.perf.grid import main, overhead_summary
from tests.conftest import tiny_spec_dict


def _report(pid, start, end, merge, evaluation, assets=0, disk=0):
    return {
        "worker_pid": pid,
        "node_id": "n",
        "started_at": start,
        "ended_at": end,
        "trial_seconds": end - start,
        "merge_seconds": merge,
        "eval_seconds": evaluation,
        "assets_read_bytes": assets,
        "disk_read_bytes": disk,
        "status": "ok",
    }


def test_overhead_counts_in_trial_time_and_gaps_and_excludes_first_trials_from_the_steady_state():
    reports = [
        _report(1, 0.0, 3.0, 0.5, 0.5, assets=1000),  # first on worker 1: loads assets
        _report(1, 3.5, 5.5, 0.5, 1.0),  # 0.5 s in-trial + 0.5 s gap over 2.5 s
        _report(2, 0.0, 2.0, 1.0, 0.0, assets=1000),  # first on worker 2
        _report(2, 2.0, 4.0, 1.0, 0.5, disk=4096),  # 0.5 s in-trial, no gap, over 2 s
    ]
    summary = overhead_summary(reports)
    assert summary["workers"] == 2 and summary["trials"] == 4
    assert summary["steady_overhead_fraction"] == pytest.approx((1.0 + 0.5) / (2.5 + 2.0))
    assert summary["overall_overhead_fraction"] == pytest.approx((2.0 + 1.0 + 1.0 + 0.5) / (3.0 + 2.5 + 2.0 + 2.0))
    assert summary["max_assets_bytes_after_first"] == 0
    assert summary["max_disk_bytes_after_first"] == 4096
    firsts = [
        t["first_on_worker"] for t in sorted(summary["per_trial"], key=lambda t: (t["worker_pid"], t["started_at"]))
    ]
    assert firsts == [True, False, True, False]


def test_perf_grid_on_the_tiny_spec(finished_tiny_run, tmp_path, capsys):
    _, storage, _, _ = finished_tiny_run
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict()))
    out = tmp_path / "grid.parquet"
    assert main([str(spec_path), "--root", str(storage.root), "--out", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    n_trials = 6  # 2 mergers × 3 poolings
    assert len(rows) == n_trials and all(r["status"] == "ok" for r in rows)
    assert all(r["trial_seconds"] >= r["merge_seconds"] + r["eval_seconds"] for r in rows)
    later = [r for r in rows if not r["first_on_worker"]]
    assert later, "every trial ran on its own worker: actors were not reused"
    assert all(r["assets_read_bytes"] == 0 for r in later)  # warm workers: θ0, heads, tensors in memory
    assert all(r["assets_read_bytes"] > 0 for r in rows if r["first_on_worker"])
    assert 0 <= rows[0]["steady_overhead_fraction"] < 1
    assert "overhead, steady state" in capsys.readouterr().out
    # the measuring run wrote nowhere near the measured root's results
    assert len(list(storage.results.rglob("*.parquet"))) > 0
