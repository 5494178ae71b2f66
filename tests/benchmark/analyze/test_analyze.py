"""``run_bench.py analyze`` on the session's finished tiny run: every analysis writes sane Parquet and PNGs.

The tiny run's experts are barely trained (near-chance accuracy, near-uniform logits), so these
tests pin down plumbing and invariants that hold whatever the accuracy: cosine diagonals, shares
summing to one, n = 1 ensembles being the expert, α = 1 being the unscaled model.
"""

from __future__ import annotations

import json
import math
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from rich.console import Console
from safetensors.torch import load_file

from benchmark.analyze import run_analyses
from benchmark.cli import main
from benchmark.model.pretrained import load_base_model
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from tests.conftest import tiny_spec_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analysed(finished_tiny_run, tmp_path_factory):
    """A private copy of the finished run, analysed once with every analysis (the default output folder)."""
    spec, storage, _, _ = finished_tiny_run
    copy = StorageRoot.at(tmp_path_factory.mktemp("analyze") / "root")
    shutil.copytree(storage.root, copy.root, ignore=shutil.ignore_patterns("runs", "results"))
    console = Console(record=True, width=200)
    start = time.perf_counter()
    summary = run_analyses(spec, copy, console=console)
    seconds = time.perf_counter() - start
    print(f"analyze on the tiny run: {seconds:.1f} s ({summary.seconds})")
    return spec, copy, summary, console.export_text()


def _table(summary, name: str):
    return pq.read_table(summary.out / f"{name}.parquet").to_pylist()


def test_outputs_land_under_the_spec_folder_as_parquet_and_png(analysed):
    spec, storage, summary, text = analysed
    assert summary.out == storage.root / "analysis" / spec.name
    assert list(summary.written) == ["geometry", "interference", "output-space", "scale"]
    names = {path.name for paths in summary.written.values() for path in paths}
    for table in ("geometry", "geometry_summary", "interference", "output_space", "output_space_agreement", "scale"):
        assert f"{table}.parquet" in names
    pngs = [path for paths in summary.written.values() for path in paths if path.suffix == ".png"]
    assert {p.name.split("-")[0] for p in pngs} == {"geometry", "interference", "output_space", "scale"}
    for path in pngs:
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in summary.out.iterdir() if p.name.startswith(".")]  # no temp debris
    for title in ("Task-vector geometry", "Interference", "Weight vs output space", "Scale sensitivity"):
        assert title in text


def test_geometry_cosines_match_a_direct_float64_computation(analysed):
    spec, storage, summary, _ = analysed
    rows = _table(summary, "geometry")
    whole = {(r["task_i"], r["task_j"]): r["cosine"] for r in rows if r["scope"] == "whole"}
    tasks = spec.setups[0].tasks
    for task in tasks:
        assert whole[task, task] == pytest.approx(1.0, abs=1e-12)
    theta0 = load_base_model(spec.models[0], storage).visual_state()
    experts = {job.task: load_file(str(job.path(storage))) for job in build_plan(spec).experts}

    def flat(task):
        return np.concatenate([(experts[task][k].double() - theta0[k].double()).numpy().ravel() for k in theta0])

    first, second = flat(tasks[0]), flat(tasks[1])
    direct = first @ second / (np.linalg.norm(first) * np.linalg.norm(second))
    assert whole[tasks[0], tasks[1]] == pytest.approx(direct, abs=1e-6)  # fp32 differences vs float64 ones
    assert whole[tasks[0], tasks[1]] == whole[tasks[1], tasks[0]]
    assert {r["group"] for r in rows if r["scope"] == "block"} == {"embed", "block 0", "block 1", "head"}
    assert not [r for r in rows if r["scope"] == "increment"]  # independent MTL: no chain, no increments


def test_interference_shares_sum_to_one_and_randmix_is_uniform(analysed):
    _, _, summary, _ = analysed
    rows = _table(summary, "interference")
    for measure in ("magmax_share", "randmix_share"):
        shares = [r["value"] for r in rows if r["measure"] == measure]
        assert len(shares) == 3 and sum(shares) == pytest.approx(1.0)
    assert all(r["value"] == pytest.approx(1 / 3, abs=0.01) for r in rows if r["measure"] == "randmix_share")
    users = [r for r in rows if r["measure"] == "consensus_users"]
    assert sorted(r["users"] for r in users) == [0, 1, 2, 3]
    assert sum(r["count"] for r in users) == users[0]["total"]  # every entry counted once
    pairwise = [r["value"] for r in rows if r["measure"] == "sign_conflict_pair"]
    overall = next(r for r in rows if r["measure"] == "sign_conflict_rate")
    assert all(0.0 <= v <= 1.0 for v in pairwise) and 0.0 <= overall["value"] <= 1.0
    assert overall["count"] <= overall["total"]


def test_output_space_starts_from_the_expert_and_grows_to_all(analysed):
    spec, storage, summary, _ = analysed
    accuracy = _table(summary, "output_space")
    agreement = _table(summary, "output_space_agreement")
    tasks = spec.setups[0].tasks
    assert {r["n_models"] for r in accuracy} == {1, 2, 3}
    assert {r["method"] for r in accuracy} == {"soup", "logit_ensemble", "prob_ensemble", "feature_ensemble"}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_examples"] == 128 for r in accuracy)
    # n = 1: soup θ0 + τ1 and every ensemble of one expert are all that expert. θ0 + (θ1 − θ0)
    # equals θ1 only up to fp32 rounding, and the barely trained experts have top-2 logit gaps of ~1e-6,
    # so one near-tie per test set may flip; anything more would be a real difference
    for row in agreement:
        if row["n_models"] == 1:
            assert row["agreement"] >= 1 - 1 / 128
    expert = next(job for job in build_plan(spec).experts if job.task == tasks[0])
    recorded = json.loads(expert.manifest_path(storage).read_text())["metrics"]["test_accuracy"]
    own = next(
        r for r in accuracy if r["n_models"] == 1 and r["method"] == "logit_ensemble" and r["eval_task"] == tasks[0]
    )
    assert own["accuracy"] == pytest.approx(recorded, abs=1 / 128 + 1e-12)
    assert {r["models"] for r in accuracy if r["n_models"] == 3} == {",".join(tasks)}


def test_scale_alpha_one_is_the_unscaled_model(analysed):
    _, _, summary, _ = analysed
    rows = _table(summary, "scale")
    assert {r["target"] for r in rows} == {"whole_model", "task_vector", "merge"}
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["agreement"] <= 1.0
        assert row["kl"] >= -1e-12 and math.isfinite(row["kl"])
        if row["alpha"] == 1.0:
            assert row["agreement"] == 1.0 and row["kl"] == pytest.approx(0.0, abs=1e-12)
    merge_tasks = {r["eval_task"] for r in rows if r["target"] == "merge"}
    assert merge_tasks == set(tiny_spec_dict()["setups"][0]["tasks"])


def test_only_runs_the_named_analyses_into_out(analysed, tmp_path):
    spec, storage, _, _ = analysed
    summary = run_analyses(
        spec, storage, only=["interference"], out=tmp_path / "elsewhere", console=Console(file=open("/dev/null", "w"))
    )
    assert list(summary.written) == ["interference"]
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == [
        "interference-ww-toy-vit-toy-mtl-seed0.png",
        "interference.parquet",
    ]


def test_missing_experts_fail_with_one_line_saying_to_run_the_spec(analysed, tmp_path, capsys):
    _, storage, _, _ = analysed
    spec = tiny_spec_dict(tasks=["digits", "stripes"])  # stripes was never fine-tuned in this root
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = sorted(p.name for p in storage.experts.rglob("*.safetensors"))
    with pytest.raises(FileNotFoundError, match="run the spec first"):
        run_analyses(parse_spec(spec), storage, console=Console(file=open("/dev/null", "w")))
    assert sorted(p.name for p in storage.experts.rglob("*.safetensors")) == before  # nothing trained
    assert main(["analyze", str(path), "--root", str(storage.root)]) == 2
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "not in" in out and "run the spec first" in out and "Traceback" not in out
    assert main(["analyze", str(path), "--root", str(storage.root), "--only", "geometry,bogus"]) == 2
    assert "unknown analysis bogus" in capsys.readouterr().out
