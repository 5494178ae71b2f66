"""Class-incremental analyses on crafted experts: sequential vs independent geometry, CIL evaluation.

No training: θ0 is a randomly initialised toy CLIP written where the pipeline caches it, and the
experts are θ0 plus constructed task vectors written through the expert store. Sequential experts
add independent random increments (nearly orthogonal, equal norms in expectation), so their
cumulative task vectors must sit on the √(s/t) baseline with increments of cosine ≈ 0; independent
experts are independent random vectors (cosine ≈ 0). The analysis must find the counterpart in
the root by expert key, whatever setup name (or spec) trained it, and state the answer.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

import ww.analysis as wa
from benchmark.analyze import run_analyses
from benchmark.experts import store as expert_store
from benchmark.model.pretrained import _toy_checkpoint
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from benchmark.toy import create_toy_model
from tests.conftest import tiny_spec_dict

SPLITS = 5
SCALE = 0.01


def _cil_spec(*modes_and_names: tuple[str, str]):
    setups = [
        {
            "name": name,
            "kind": "cil",
            "dataset": "digits",
            "n_splits": SPLITS,
            "data": {"n_train": 256, "n_test": 128, "seed": 0},
            "finetune": {"mode": mode, "steps": 8, "batch_size": 32, "lr": 1e-4, "warmup": 2},
        }
        for mode, name in modes_and_names
    ]
    return parse_spec(tiny_spec_dict(setups=setups, mergers=["task_arithmetic"], poolings=["none"]))


def _write_experts(spec, storage: StorageRoot, seed: int) -> None:
    """θ0 + crafted τ for every expert of ``spec`` (cumulative random increments when sequential)."""
    theta0 = create_toy_model(seed=spec.models[0].pretrain.seed)
    path = _toy_checkpoint(spec.models[0], storage)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in theta0.state_dict().items()}, str(path))
    visual = theta0.visual.state_dict()
    generator = torch.Generator().manual_seed(seed)
    plan = build_plan(spec)
    for setup in spec.setups:
        total = {k: torch.zeros_like(v) for k, v in visual.items()}
        for job in (j for j in plan.experts if j.setup == setup.name):
            step = {k: SCALE * torch.randn(v.shape, generator=generator) for k, v in visual.items()}
            if setup.finetune.mode == "sequential":
                total = {k: total[k] + step[k] for k in visual}
            else:
                total = step
            expert_store.save_expert(job, storage, {k: visual[k] + total[k] for k in visual}, {"test_accuracy": 0.0})


@pytest.fixture
def root(tmp_path):
    storage = StorageRoot.at(tmp_path / "root")
    _write_experts(_cil_spec(("sequential", "cil-seq")), storage, seed=1)
    _write_experts(_cil_spec(("independent", "cil-ind-other-spec")), storage, seed=2)
    return storage


def test_sequential_chain_sits_on_the_sqrt_baseline_and_beats_independent(root, tmp_path):
    console = Console(record=True, width=250)
    summary = run_analyses(_cil_spec(("sequential", "cil-seq")), root, only=["geometry"], console=console)
    out = summary.out
    [comparison] = pq.read_table(out / "geometry_comparison.parquet").to_pylist()
    baseline = wa.mean_off_diagonal(wa.sqrt_ratio_baseline(SPLITS))
    assert comparison["sequential_setup"] == "cil-seq"
    assert comparison["independent_setup"] == "cil-ind-other-spec"  # found by key in another spec's folder
    assert comparison["mean_cosine_sequential"] == pytest.approx(baseline, abs=0.01)
    assert comparison["mean_cosine_independent"] == pytest.approx(0.0, abs=0.01)
    assert comparison["mean_increment_cosine"] == pytest.approx(0.0, abs=0.01)
    assert comparison["baseline_mean"] == pytest.approx(baseline)
    assert comparison["sequential_more_correlated"] is True
    assert comparison["answer"].startswith(
        "sequential task vectors are more correlated than independent: mean off-diagonal cos "
    )
    assert comparison["answer"] in console.export_text()

    rows = pq.read_table(out / "geometry.parquet").to_pylist()
    whole = [r for r in rows if r["scope"] == "whole"]
    assert all(r["baseline"] == pytest.approx(wa.sqrt_ratio_baseline(SPLITS)[r["i"], r["j"]].item()) for r in whole)
    assert all(r["cosine"] == pytest.approx(r["baseline"], abs=0.01) for r in whole)
    increments = [r for r in rows if r["scope"] == "increment"]
    assert len(increments) == SPLITS * SPLITS
    assert all(r["cosine"] == pytest.approx(1.0 if r["i"] == r["j"] else 0.0, abs=0.01) for r in increments)
    assert (out / "geometry-ww-toy-vit-cil-seq-seed0-increments.png").exists()


def test_an_independent_setup_finds_its_sequential_counterpart_too(root):
    console = Console(record=True, width=250)
    summary = run_analyses(_cil_spec(("independent", "cil-ind-other-spec")), root, only=["geometry"], console=console)
    [comparison] = pq.read_table(summary.out / "geometry_comparison.parquet").to_pylist()
    assert (comparison["sequential_setup"], comparison["independent_setup"]) == ("cil-seq", "cil-ind-other-spec")
    assert comparison["sequential_more_correlated"] is True


def test_both_modes_in_one_spec_give_one_comparison(tmp_path):
    storage = StorageRoot.at(tmp_path / "root")
    spec = _cil_spec(("sequential", "seq"), ("independent", "ind"))
    _write_experts(spec, storage, seed=3)
    summary = run_analyses(spec, storage, only=["geometry"], console=Console(file=open("/dev/null", "w")))
    comparisons = pq.read_table(summary.out / "geometry_comparison.parquet").to_pylist()
    assert [(c["sequential_setup"], c["independent_setup"]) for c in comparisons] == [("seq", "ind")]


def test_a_sequential_setup_without_counterpart_says_how_to_get_one(tmp_path):
    storage = StorageRoot.at(tmp_path / "root")
    spec = _cil_spec(("sequential", "alone"))
    _write_experts(spec, storage, seed=4)
    console = Console(record=True, width=250)
    summary = run_analyses(spec, storage, only=["geometry"], console=console)
    assert not (summary.out / "geometry_comparison.parquet").exists()
    assert "no independent fine-tuning of the same CIL setup" in console.export_text()


def test_cil_output_space_and_scale_evaluate_the_joint_task(tmp_path):
    storage = StorageRoot.at(tmp_path / "root")
    spec = _cil_spec(("sequential", "seq"))
    _write_experts(spec, storage, seed=5)
    summary = run_analyses(spec, storage, only=["output-space", "scale"], console=Console(file=open("/dev/null", "w")))
    accuracy = pq.read_table(summary.out / "output_space.parquet").to_pylist()
    assert {r["eval_task"] for r in accuracy} == {"digits"}  # task-agnostic, the joint head over all classes
    assert sorted({r["n_models"] for r in accuracy}) == list(range(1, SPLITS + 1))
    scale = pq.read_table(summary.out / "scale.parquet").to_pylist()
    assert {r["eval_task"] for r in scale if r["target"] != "merge"} == {"digits[0/5]"}  # the expert's own split
    assert {r["eval_task"] for r in scale if r["target"] == "merge"} == {"digits"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in accuracy + scale)
    # agreement rows carry the report's paired test: only-A − only-B right is exactly the
    # difference of the two methods' correct counts
    agreement = pq.read_table(summary.out / "output_space_agreement.parquet").to_pylist()
    correct = {(r["n_models"], r["method"]): r["n_correct"] for r in accuracy}
    for r in agreement:
        assert (
            r["only_a_correct"] - r["only_b_correct"]
            == correct[r["n_models"], r["method_a"]] - correct[r["n_models"], r["method_b"]]
        )
        assert 0.0 <= r["mcnemar_p"] <= 1.0
        assert r["only_a_correct"] + r["only_b_correct"] <= round((1 - r["agreement"]) * accuracy[0]["n_examples"])
