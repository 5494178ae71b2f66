"""The whole data flow on a tiny toy spec, on a real (local) Ray: experts, banks, grid, Parquet, report.

One pipeline run is shared by the tests of this module (it costs about a minute); each test pins
down one promise of docs/DESIGN.md's data flow against what that run left in the storage root.
"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from benchmark.pipeline import run_spec
from benchmark.report.leaderboard import leaderboard_rows
from benchmark.report.paired import unpack_correct
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from tests.conftest import tiny_spec_dict


@pytest.fixture(scope="module")
def finished_run(finished_tiny_run, tmp_path_factory):
    """A private copy of the session's finished run (these tests add trials to it)."""
    import shutil

    spec, storage, summary, console = finished_tiny_run
    copy = StorageRoot.at(tmp_path_factory.mktemp("e2e") / "root")
    shutil.copytree(storage.root, copy.root, ignore=shutil.ignore_patterns("runs"))
    return spec, copy, summary, console


def test_dry_run_plans_without_training(tmp_path):
    storage = StorageRoot.at(tmp_path / "root")
    console = Console(record=True, width=200)
    summary = run_spec(parse_spec(tiny_spec_dict()), storage, dry_run=True, console=console)
    text = console.export_text()
    assert "experts (Ray Train)" in text and "trials (Ray Tune)" in text
    assert summary.trials_run == 0 and summary.experts_trained == 0
    assert not (tmp_path / "root").exists()  # nothing written, not even the tree


def test_experts_are_safetensors_with_manifests(finished_run):
    spec, storage, summary, _ = finished_run
    plan = build_plan(spec)
    assert summary.experts_trained == len(plan.experts) == 3
    for job in plan.experts:
        manifest = json.loads(job.manifest_path(storage).read_text())
        assert manifest["key"] == job.key
        assert 0.0 <= manifest["metrics"]["test_accuracy"] <= 1.0
        assert job.path(storage).suffix == ".safetensors"


def test_every_trial_wrote_one_part_with_a_row_per_task(finished_run):
    spec, storage, summary, _ = finished_run
    plan = build_plan(spec)
    status = results.trial_status(storage)
    assert all(status[t.key] == "ok" for t in plan.trials)
    table = results.read_results(storage)
    trial_rows = [r for r in table.to_pylist() if r["lambda_policy"] != "reference"]
    assert len(trial_rows) == len(plan.trials) * len(spec.setups[0].tasks)
    for row in trial_rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n_examples"] == 128
        assert row["normalized_accuracy"] == pytest.approx(row["accuracy"] / row["expert_accuracy"])
        assert row["uses_test_data"] is False and row["merge_seconds"] >= 0
        # schema 2: the per-example outcomes behind n_correct, and balanced accuracy
        bits = unpack_correct(row["correct_bits"], row["n_examples"])
        assert int(bits.sum()) == row["n_correct"] and row["schema_version"] == 3
        assert 0.0 <= row["balanced_accuracy"] <= 1.0
    baseline = [r for r in trial_rows if r["pooling"] == "none"]
    assert baseline and all(r["lam"] == 1.0 and r["collaborative"] is None for r in baseline)


def test_leaderboard_has_zeroshot_expert_and_merged_rows(finished_run):
    _, storage, _, _ = finished_run
    rows = leaderboard_rows(results.read_results(storage))
    mergers = {r["merger"] for r in rows}
    assert {"zeroshot", "expert", "task_arithmetic", "ties"} <= mergers
    expert = next(r for r in rows if r["merger"] == "expert")
    assert expert["normalized"] == pytest.approx(1.0)


def test_zero_shot_rows_carry_theta0s_outcomes_and_compare_with_a_merge(finished_run):
    from benchmark.report.compare import compare_tables

    _, storage, _, _ = finished_run
    table = results.read_results(storage)
    zeroshot = [r for r in table.to_pylist() if r["merger"] == "zeroshot"]
    assert zeroshot
    for row in zeroshot:
        bits = unpack_correct(row["correct_bits"], row["n_examples"])
        assert bits.mean() == pytest.approx(row["accuracy"])
    comparison, tests = compare_tables(table, "ties/avg/A*", "zeroshot")
    assert comparison.rows and tests.rows  # one McNemar row per eval task


def test_a_zero_shot_cache_without_outcomes_is_evaluated_again(finished_run, tmp_path):
    """Caches written before θ0's outcomes were kept still hold the accuracy; prepare fills the rest."""
    import shutil

    from benchmark.model.prepare import ZEROSHOT_BITS, prepare_model_assets

    spec, storage, _, _ = finished_run
    root = tmp_path / "root"
    shutil.copytree(storage.root, root, ignore=shutil.ignore_patterns("runs", "results", "experts"))
    cached = sorted((root / "cache" / "zeroshot").rglob("*.json"))
    assert cached
    old = json.loads(cached[0].read_text())
    cached[0].write_text(json.dumps({k: v for k, v in old.items() if k != ZEROSHOT_BITS}))
    setup = spec.setups[0]
    tasks = [(task, setup.data.model_dump(mode="json"), False) for task in setup.tasks]
    prepared = prepare_model_assets(spec.models[0].model_dump(mode="json"), tasks, str(root))
    assert json.loads(cached[0].read_text()) == old  # the same accuracy, and the outcomes again
    assert all(ZEROSHOT_BITS in result for result in prepared["zeroshot"].values())


def test_second_run_reuses_everything_and_adds_no_rows(finished_run):
    spec, storage, _, _ = finished_run
    before = results.read_results(storage).num_rows
    summary = run_spec(spec, storage, console=Console(record=True, width=200))
    assert summary.trials_run == 0 and summary.experts_trained == 0
    assert summary.trials_skipped == len(build_plan(spec).trials)
    assert results.read_results(storage).num_rows == before


def test_new_axis_value_runs_only_the_new_trials(finished_run):
    spec, storage, _, _ = finished_run
    bigger = parse_spec(tiny_spec_dict(poolings=["none", "avg", "randmix", "magmax", "oracle"]))
    summary = run_spec(bigger, storage, console=Console(record=True, width=200))
    assert summary.experts_trained == 0
    assert summary.trials_run == 4  # (magmax pooling, oracle) × 2 mergers; the rest is resumed
    assert all(s == "ok" for s in results.trial_status(storage).values())
    oracle = [r for r in results.read_results(storage).to_pylist() if r["lambda_policy"] == "oracle"]
    ties_grid = [round(0.1 * i, 10) for i in range(1, 19)]
    assert sorted({r["lam"] for r in oracle if r["merger"] == "ties"}) == ties_grid
    assert all(r["uses_test_data"] for r in oracle)
    # one bit array per λ of the sweep, each consistent with its own count
    assert all(int(unpack_correct(r["correct_bits"], r["n_examples"]).sum()) == r["n_correct"] for r in oracle)
