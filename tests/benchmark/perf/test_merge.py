"""benchmark.perf.merge runs end to end on a tiny layout and writes its table (no timing assertions)."""

import pyarrow.parquet as pq
import pytest

from benchmark.perf import merge as perf_merge


def test_perf_merge_writes_the_table_with_every_column(tmp_path):
    out = tmp_path / "perf.parquet"
    code = perf_merge.main(
        [
            "--model",
            "tiny",
            "--tasks",
            "3",
            "--k",
            "4",
            "--mergers",
            "ties,tsv_m",
            "task_arithmetic",
            "--weave",
            "ties",
            "--poolings",
            "avg",
            "randmix",
            "--out",
            str(out),
            "--in-process",
        ]
    )
    assert code == 0
    table = pq.read_table(out).to_pylist()
    assert set(table[0]) == set(perf_merge.COLUMNS)
    kinds = [(row["kind"], row["merger"], row["pooling"]) for row in table]
    streams = [("stream", variant, None) for variant in perf_merge.STREAM_VARIANTS]
    assert kinds == [
        *streams,
        ("merge", "ties", None),
        ("merge", "tsv_m", None),
        ("merge", "task_arithmetic", None),
        ("weave", "ties", "avg"),
        ("weave", "ties", "randmix"),
        *streams,
    ]
    for row in table:
        assert row["error"] is None and row["seconds"] > 0 and row["peak_rss_gb"] > 0
        assert row["model"] == "tiny" and row["tasks"] == 3 and row["out_of_core"] is False
    weave = table[5]
    assert weave["k"] == 4 and weave["ratio_vs_merger"] > 0 and weave["target"].startswith("<= 1.5x merger")
    assert table[2]["target"] == "<= 5x stream" and table[3]["target"] == "<= 60 s"
    assert not list(tmp_path.glob("ww-perf-bank-*"))  # the bank file is deleted


def test_out_of_core_measurement_in_a_fresh_subprocess(tmp_path):
    import ww

    layout = perf_merge.model_layout("tiny")
    path = tmp_path / "bank.safetensors"
    perf_merge.write_synthetic_bank(path, layout, tasks=2, seed=0)
    bank = ww.open_bank(path)
    assert bank.layout == layout and len(bank) == 2
    magnitude = float(bank.data.abs().mean())
    assert 1e-4 < magnitude < 1e-2  # realistic task-vector entries
    result = perf_merge.measure({"kind": "merge", "merger": "ties"}, path, out_of_core=True, repeat=1)
    assert result.get("error") is None and result["seconds"] > 0 and result["peak"] >= result["baseline"] > 0


def test_perf_merge_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown merger"):
        perf_merge.main(["--model", "tiny", "--mergers", "tie", "--out", str(tmp_path / "x.parquet")])


@pytest.mark.skipif(not __import__("ww").kernels.compiler_available(), reason="no C++ compiler for inductor")
def test_perf_merge_reports_compiled_kernels_and_their_warm_up_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("WW_KERNELS", "auto")  # restored afterwards; --kernels overrides it
    out = tmp_path / "perf.parquet"
    code = perf_merge.main(
        [
            "--model",
            "tiny",
            "--tasks",
            "3",
            "--mergers",
            "magmax",
            "--weave",
            "--kernels",
            "compiled",
            "--out",
            str(out),
            "--in-process",
            "--repeat",
            "1",
        ]
    )
    assert code == 0
    rows = pq.read_table(out).to_pylist()
    merge = next(row for row in rows if row["kind"] == "merge")
    assert merge["kernels"] == "compiled" and merge["warmup_seconds"] > 0 and merge["error"] is None
    assert all(row["kernels"] is None for row in rows if row["kind"] == "stream")
    code = perf_merge.main(
        [
            "--model",
            "tiny",
            "--tasks",
            "3",
            "--mergers",
            "magmax",
            "--weave",
            "--kernels",
            "auto",
            "--out",
            str(out),
            "--in-process",
            "--repeat",
            "1",
        ]
    )
    merge = next(row for row in pq.read_table(out).to_pylist() if row["kind"] == "merge")
    assert merge["kernels"] == "eager" and merge["warmup_seconds"] == 0  # auto: a tiny bank stays eager


def test_an_out_of_core_warm_up_merges_a_memory_mapped_cut_and_removes_it(tmp_path, monkeypatch):
    import ww

    path = tmp_path / "bank.safetensors"
    perf_merge.write_synthetic_bank(path, perf_merge.model_layout("tiny"), tasks=2, seed=0)
    bank = ww.open_bank(path)
    seen = []
    monkeypatch.setattr(perf_merge, "_run_job", lambda job, small: seen.append(small.stream().sampler is None))
    perf_merge._warm_up({"kind": "merge", "merger": "ties"}, bank, tmp_path)
    perf_merge._warm_up({"kind": "merge", "merger": "ties"}, bank)
    # out of core: the cut is read from a file like the real bank (no sampler: the two-pass path)
    assert seen == [True, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.safetensors"]


def test_one_shot_merges_state_dicts_in_fresh_processes_and_reports_every_mode(tmp_path):
    out = tmp_path / "one-shot.parquet"
    code = perf_merge.main(
        [
            "--model",
            "tiny",
            "--tasks",
            "3",
            "--k",
            "4",
            "--one-shot",
            "--mergers",
            "ties",
            "--weave",
            "ties",
            "--poolings",
            "randmix",
            "--kernels",
            "auto",
            "eager",
            "--repeat",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = pq.read_table(out).to_pylist()
    assert set(rows[0]) == set(perf_merge.COLUMNS)
    assert [(row["kind"], row["merger"], row["pooling"], row["kernels"]) for row in rows] == [
        ("one-shot", "ties", None, "auto"),
        ("one-shot", "ties", None, "eager"),
        ("one-shot weave", "ties", "randmix", "auto"),
        ("one-shot weave", "ties", "randmix", "eager"),
    ]
    for row in rows:
        assert row["error"] is None and row["seconds"] > 0 and row["process_seconds"] > row["seconds"]
        assert row["compiled"] == "" and row["over_input_models"] is not None and row["ratio_vs_eager"] > 0
    assert rows[0]["target"] == "<= 1 model over input, <= eager, <= 45.6 s"
    assert rows[1]["target"] == "<= 1 model over input, <= 45.6 s"
    assert not list(tmp_path.glob("ww-perf-bank-*"))


@pytest.mark.parametrize("kind", ["one-shot", "one-shot weave"])
def test_a_one_shot_child_returns_the_eager_result(tmp_path, kind):
    import torch

    import ww

    path = tmp_path / "bank.safetensors"
    perf_merge.write_synthetic_bank(path, perf_merge.model_layout("tiny"), tasks=3, seed=1)
    job = {"kind": kind, "merger": "ties", "pooling": "avg", "lambdas": [0.5, 1.0], "mode": "auto"}
    result = perf_merge.measure_one_shot(job, path, repeat=1, cold_cache=True, return_output=True)
    assert result.get("error") is None and result["compiled"] == []
    bank = ww.open_bank(path)
    with ww.kernels.use("eager"):
        expected = (
            ww.merge("ties", bank)
            if kind == "one-shot"
            else ww.weave(bank, "ties", lambdas=[0.5, 1.0], pooling="avg", collaborative=True, seed=0)
        )
    assert list(result["output"]) == list(expected)
    assert all(torch.equal(result["output"][name], expected[name]) for name in expected)


def test_one_shot_flags_refuse_what_they_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="several are compared only with --one-shot"):
        perf_merge.main(["--model", "tiny", "--kernels", "auto", "eager", "--out", str(tmp_path / "x.parquet")])
    with pytest.raises(ValueError, match="--cold-cache only applies to --one-shot"):
        perf_merge.main(["--model", "tiny", "--cold-cache", "--out", str(tmp_path / "x.parquet")])
