"""Faulty trials become error rows and the grid finishes the rest.

The faults are real ones, injected through a plugin module of test mergers (``tests.fault_mergers``)
that a spec names like any researcher's own merger: a merger that raises, one that fails once, one
that returns NaN, one that hangs, one that eats memory, one that kills its worker process.
"""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time

import pytest
import torch
from rich.console import Console

from benchmark.pipeline import run_spec
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from benchmark.trials.limits import TrialFault, TrialLimitExceeded, private_memory_bytes, trial_limits
from tests.conftest import tiny_spec_dict

# --- the limits, in this process ----------------------------------------------------------------


def test_a_hanging_block_is_stopped_at_the_time_limit():
    start = time.monotonic()
    with pytest.raises(TrialLimitExceeded, match=r"trial_timeout_s = 0.5 s"):
        with trial_limits(0.5, None):
            time.sleep(60)  # a blocking call: the signal interrupts it
    assert time.monotonic() - start < 5


def test_an_except_exception_inside_the_trial_cannot_swallow_the_limit():
    with pytest.raises(TrialLimitExceeded):
        with trial_limits(0.3, None):
            for _ in range(200):
                try:
                    time.sleep(0.05)
                except Exception:  # what a careless merger might write
                    pass


def test_a_block_growing_past_the_memory_limit_is_stopped():
    limit_gb = (private_memory_bytes() + 300 * 2**20) / 2**30
    held = []
    with pytest.raises(TrialLimitExceeded, match="trial_memory_gb") as info:
        with trial_limits(None, limit_gb):
            for _ in range(64):  # 4 GB if nothing stopped it
                held.append(torch.ones(16 * 2**20))  # 64 MB, touched
                time.sleep(0.01)
    reached = float(re.search(r"reached ([0-9.]+) GB", str(info.value)).group(1))
    assert reached > limit_gb - 0.01 and len(held) < 24  # stopped past the limit, long before 4 GB
    del held


def test_a_block_within_its_limits_runs_untouched_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGUSR2)
    with trial_limits(5, 64):
        value = sum(range(1000))
    time.sleep(0.2)  # a late signal would arrive here
    assert value == 499500 and signal.getsignal(signal.SIGUSR2) is before


def test_limits_off_thread_are_refused_rather_than_silently_ignored():
    errors = []

    def run():
        try:
            with trial_limits(1, None):
                pass
        except TrialFault as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors and "main thread" in errors[0]


# --- the grid on Ray ----------------------------------------------------------------------------

FAULTS = {
    "task_arithmetic": None,  # a healthy trial next to the faulty ones
    "fault_flaky": None,  # fails its first attempt, the retry succeeds
    "fault_raise": "RuntimeError: fault_raise: injected failure (attempt 2)",
    "fault_nan": "NonFiniteResultError: the merged task vector holds",
    "fault_sleep": "TrialLimitExceeded: trial exceeded resources.trial_timeout_s = 20 s",
    "fault_hog": "TrialLimitExceeded: trial exceeded resources.trial_memory_gb = 3",
    "fault_exit": "trial worker failed (after 2 attempts)",
}


@pytest.fixture
def fault_plugin():
    yield "tests.fault_mergers"
    import tests.fault_mergers

    tests.fault_mergers.forget()


def test_faulty_trials_become_error_rows_and_the_grid_finishes_the_rest(finished_tiny_run, tmp_path, fault_plugin):
    _, done, _, _ = finished_tiny_run
    root = tmp_path / "root"
    shutil.copytree(done.root, root, ignore=shutil.ignore_patterns("runs", "results"))  # θ0, heads, experts
    spec = parse_spec(
        tiny_spec_dict(
            name="faults",
            plugins=[fault_plugin],
            mergers=list(FAULTS),
            poolings=["none"],
            resources={"prepare_cpus": 1, "trial_cpus": 1, "trial_timeout_s": 20, "trial_memory_gb": 3},
        )
    )
    storage = StorageRoot.at(root)
    start = time.monotonic()
    summary = run_spec(spec, storage, console=Console(quiet=True))
    elapsed = time.monotonic() - start

    assert summary.trials_run == len(FAULTS) and summary.experts_trained == 0
    rows = [r for r in results.read_results(storage).to_pylist() if r["lambda_policy"] != "reference"]
    by_merger = {}
    for row in rows:
        by_merger.setdefault(row["merger"], []).append(row)
    assert set(by_merger) == set(FAULTS)
    plan = build_plan(spec)
    assert {r["trial_key"] for r in rows} == {t.key for t in plan.trials}
    for merger, expected in FAULTS.items():
        trial_rows = by_merger[merger]
        if expected is None:
            assert [r["status"] for r in trial_rows] == ["ok"] * 3, trial_rows[0].get("error")
            assert all(0 <= r["accuracy"] <= 1 for r in trial_rows)
        else:
            assert len(trial_rows) == 1 and trial_rows[0]["status"] == "error"
            assert expected in trial_rows[0]["error"], trial_rows[0]["error"]
            assert trial_rows[0]["accuracy"] is None
    assert "attempt" not in by_merger["fault_nan"][0]["error"]  # not retried: it would recur
    assert elapsed < 300  # the 600 s sleep and the 8 GB allocation were cut short
