"""``run_bench.py perf eval`` runs end to end on a small fake split and records what it measured."""

from __future__ import annotations

import math

import pyarrow.parquet as pq

from benchmark.perf import evaluation as perf_eval


def test_perf_eval_measures_both_paths_and_writes_parquet(tmp_path, capsys):
    out = tmp_path / "perf.parquet"
    code = perf_eval.main(
        [
            "--n-images",
            "48",
            "--image-size",
            "96",
            "--passes",
            "1",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    assert code in (0, 1)  # 1 = a target missed: machine-dependent, reported, not a crash
    rows = pq.read_table(out).to_pylist()
    assert [r["path"] for r in rows] == ["decode", "cached", "cached (evaluation.evaluate)"]
    for row in rows:
        assert row["n_images"] == 48 and row["resolution"] == 32 and row["images_per_s"] > 0
    cached = rows[1]
    assert 0 <= cached["data_fraction"] <= 1 and math.isclose(
        cached["speedup_vs_decode"], cached["images_per_s"] / rows[0]["images_per_s"]
    )
    assert cached["cache_build_seconds"] > 0
    text = capsys.readouterr().out
    assert "cached ÷ decode" in text and "data share" in text
