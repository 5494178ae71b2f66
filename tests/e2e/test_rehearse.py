"""``run_bench.py rehearse`` end to end at real size: ViT-B-32's architecture, two fake tasks.

The rehearsal runs the unchanged pipeline (Ray Train experts, banks, Ray Tune trials, Parquet) on
a spec derived from the paper's, with a small grid holding an SVD merger (TSV-M) and a weave; the
test checks that every trial reached the results and that every stage was measured.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from benchmark.data import loaders as data

# Ray workers take their environment from the moment Ray starts, which is the session's first
# Ray test: the fakes' data root must be set before that, i.e. when this module is collected.
_SCRATCH = Path(tempfile.gettempdir()) / f"ww-test-rehearse-{os.getpid()}"
os.environ.setdefault(data.DATA_ROOT_ENV, str(_SCRATCH / "data"))

STAGES = ("fakes", "ray_init", "prepare", "experts", "banks", "grid", "report")


def test_rehearsal_spec_keeps_the_papers_grid_and_cuts_only_sizes(tmp_path):
    import yaml

    from benchmark.perf.rehearse import Sizes, rehearsal_spec
    from benchmark.spec.schema import PRESETS, parse_spec

    paper = yaml.safe_load((PRESETS / "paper_mtl.yaml").read_text())
    spec = rehearsal_spec("ViT-B-32", "mtl", 3, tmp_path / "b32.safetensors", Sizes(steps=3, batch_size=4))
    parsed = parse_spec(spec)
    assert [m.name for m in parsed.mergers] == paper["mergers"]
    assert parsed.poolings == paper["poolings"] and parsed.variants == paper["variants"]
    setup = parsed.setups[0]
    assert setup.tasks == ["EuroSAT", "SVHN", "MNIST"]  # the paper's tasks with the fewest classes
    assert setup.finetune.steps == 3 and setup.finetune.batch_size == 4
    assert setup.finetune.lr == paper["setups"][0]["finetune"]["lr"]
    assert parsed.models[0].pretrained == str(tmp_path / "b32.safetensors")
    twenty = parse_spec(rehearsal_spec("ViT-B-32", "mtl", 20, tmp_path / "x.safetensors", Sizes())).setups[0]
    assert len(twenty.tasks) == 20 and twenty.tasks[-1] == "RenderedSST2"
    with pytest.raises(ValueError, match="2, 4, 5, 10"):
        rehearsal_spec("ViT-B-32", "cil", 8, tmp_path / "x.safetensors", Sizes())


@pytest.mark.slow
def test_rehearsal_b32_two_tasks_reaches_results_and_measures_every_stage(ray_session):
    import pyarrow.parquet as pq
    from rich.console import Console

    from benchmark.perf.rehearse import Sizes, rehearse
    from benchmark.results.store import read_results

    if os.environ[data.DATA_ROOT_ENV] != str(_SCRATCH / "data"):
        pytest.skip(f"{data.DATA_ROOT_ENV} is set by the caller: the fakes cannot reach the session's Ray workers")
    from benchmark.spec.schema import ResourcesSpec

    # the memory-mapped bank route, where this version of the harness has it (resources.bank_route)
    route = "file" if "bank_route" in ResourcesSpec.model_fields else None
    console = Console(record=True, width=220)
    grid = {"mergers": ["task_arithmetic", "tsv_m"], "poolings": ["none", "avg"], "variants": ["collaborative"]}
    try:
        result = rehearse(
            "ViT-B-32",
            "mtl",
            2,
            _SCRATCH,
            sizes=Sizes(steps=2, batch_size=4, test_images=8),
            grid=grid,
            bank_route=route,
            data_root=_SCRATCH / "data",
            console=console,
        )
        table = pq.read_table(result.table_path).to_pylist()
        results = read_results(result.storage).to_pylist()
        bulky_left = [
            p.name for p in (_SCRATCH / "theta0", _SCRATCH / "data", _SCRATCH / "root" / "experts") if p.exists()
        ]
    finally:
        import shutil

        shutil.rmtree(_SCRATCH, ignore_errors=True)

    trials = result.summary.plan.trials
    assert len(trials) == 4 and result.summary.trials_run == 4
    ok = {r["trial_key"] for r in results if r["status"] == "ok"}
    assert {t.key for t in trials} <= ok  # every trial (TSV-M and the weave among them) reached Parquet
    assert {r["eval_task"] for r in results if r["trial_key"] in ok} >= {"EuroSAT", "SVHN"}
    assert "Leaderboard" in console.export_text()

    by_stage = {r["stage"]: r for r in table if r["stage"] not in ("expert", "trial")}
    assert tuple(by_stage) == STAGES
    for name in STAGES:
        assert by_stage[name]["seconds"] > 0 and by_stage[name]["driver_peak_rss_bytes"] > 0, name
    for name in ("prepare", "experts", "grid"):
        assert by_stage[name]["worker_peak_rss_bytes"] > 100 * 2**20, name  # a process holding a ViT-B-32
    if route is None:  # the bank travels through the object store: two B-32 task vectors
        assert by_stage["grid"]["object_store_peak_bytes"] > 2 * 300 * 2**20
    for name in ("prepare", "experts"):
        assert by_stage[name]["bytes_written"] > 0, name
    experts = [r for r in table if r["stage"] == "expert"]
    assert len(experts) == 2
    for row in experts:  # an expert file alone is ≈ 350 MB at B-32
        assert row["seconds"] > 0 and row["worker_peak_rss_bytes"] > 300 * 2**20 and row["bytes_written"] > 300 * 2**20
    trial_rows = [r for r in table if r["stage"] == "trial"]
    assert sorted(r["item"] for r in trial_rows) == sorted(
        ["task_arithmetic · none", "task_arithmetic · avg A*", "tsv_m · none", "tsv_m · avg A*"]
    )
    for row in trial_rows:
        assert row["seconds"] > 0 and row["worker_peak_rss_bytes"] > 300 * 2**20 and row["bytes_written"] > 0
    assert bulky_left == []  # θ0, the fakes and the experts are removed without --keep
