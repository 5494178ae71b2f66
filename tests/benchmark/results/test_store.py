"""Parquet parts: atomic, one per trial key, read back as one dataset; the leaderboard aggregates them."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from benchmark.report.leaderboard import leaderboard_rows, render_leaderboard
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot, atomic_write


def _row(key: str, task: str, acc: float, seed: int = 0, merger: str = "ties", pooling: str = "avg", **extra) -> dict:
    now = datetime.now(timezone.utc)
    row = dict(
        trial_key=key,
        status="ok",
        model="m",
        setup="s",
        merger=merger,
        pooling=pooling,
        collaborative=True,
        lambda_policy="weave",
        lambdas=[0.1, 0.2],
        lam=None,
        seed=seed,
        eval_task=task,
        n_examples=10,
        accuracy=acc,
        expert_accuracy=0.8,
        zeroshot_accuracy=0.5,
        normalized_accuracy=acc / 0.8,
        started_at=now,
        finished_at=now,
    )
    row.update(extra)
    return row


def test_parts_round_trip_and_status_by_key(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    results.write_part(storage, [_row("k1", "a", 0.5), _row("k1", "b", 0.7)], "k1")
    results.write_part(storage, [_row("k2", "a", 0.1, status="error", error="boom")], "k2")
    table = results.read_results(storage)
    assert table.num_rows == 3
    assert set(table.column_names) >= {"trial_key", "normalized_accuracy", "merge_seconds", "lambdas"}
    assert results.trial_status(storage) == {"k1": "ok", "k2": "error"}
    assert results.part_path(storage, "m", "s", "k1").parent.name == "setup=s"


def test_rewriting_a_key_replaces_its_part_without_duplicates(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    results.write_part(storage, [_row("k1", "a", 0.5)], "k1")
    results.write_part(storage, [_row("k1", "a", 0.6)], "k1")
    table = results.read_results(storage)
    assert table.column("accuracy").to_pylist() == [0.6]


def test_interrupted_write_leaves_no_readable_part(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    target = results.part_path(storage, "m", "s", "k9")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"PAR1 half a file")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    # debris a SIGKILL would leave (temp name) is never read as a result
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / ".tmp-dead-k9.parquet").write_bytes(b"garbage")
    assert results.read_results(storage).num_rows == 0


def test_leaderboard_means_over_tasks_then_seeds(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    results.write_part(storage, [_row("s0", "a", 0.4, seed=0), _row("s0", "b", 0.6, seed=0)], "s0")
    results.write_part(storage, [_row("s1", "a", 0.6, seed=1), _row("s1", "b", 0.8, seed=1)], "s1")
    rows = leaderboard_rows(results.read_results(storage))
    assert len(rows) == 1
    assert rows[0]["n_seeds"] == 2
    assert rows[0]["accuracy"] == pytest.approx(0.6)  # seeds' task means 0.5 and 0.7
    assert rows[0]["accuracy_std"] == pytest.approx(0.1414, abs=1e-3)
    assert rows[0]["normalized"] == pytest.approx(0.75)


def test_render_leaderboard_prints_every_group(tmp_path):
    from rich.console import Console

    storage = StorageRoot.at(tmp_path).ensure()
    results.write_part(storage, [_row("t", "a", 0.4)], "t")
    results.write_part(
        storage,
        [_row("z", "a", 0.3, merger="zeroshot", pooling="-", collaborative=None, lambda_policy="reference")],
        "z",
    )
    console = Console(record=True, width=160)
    render_leaderboard(results.read_results(storage), console)
    text = console.export_text()
    assert "zeroshot" in text and "ties" in text and "40.00" in text and "30.00" in text


def test_unwritable_root_fails_fast(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        StorageRoot.at(blocker / "root").ensure()


def test_oracle_entry_is_the_best_lambda_on_test_data(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    common = dict(pooling="oracle", collaborative=None, lambda_policy="oracle", uses_test_data=True)
    rows = [
        _row("o", "a", 0.2, lam=0.1, **common),
        _row("o", "b", 0.4, lam=0.1, **common),
        _row("o", "a", 0.6, lam=0.2, **common),
        _row("o", "b", 0.8, lam=0.2, **common),
    ]
    results.write_part(storage, rows, "o")
    (entry,) = leaderboard_rows(results.read_results(storage))
    assert entry["accuracy"] == pytest.approx(0.7)
    assert entry["uses_test_data"] is True and "0.2" in entry["lambda"]
