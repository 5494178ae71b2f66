"""``run_bench.py perf grid``: what the Ray Tune grid costs beyond merging and evaluating.

docs/DESIGN.md's Ray principle — warm reused actors, the bank once per node, per-trial overhead a small
fraction of trial time — measured on a real grid. The spec (default: the quickstart) is first run
to completion on ``--root`` (everything cached is reused); then its whole grid runs again in a
scratch root that shares the cache and the experts but has no results, so every trial executes.
Each trial reports when it started and ended, on which worker, how long its merge and its
evaluations took, and how many bytes it read: from the storage root (θ0, heads, eval tensors —
counted by the warm worker itself) and from the disk (Linux ``/proc/self/io``).

- **overhead** of a trial = its wall time on the worker minus merge and eval time, plus the idle gap
  since the worker's previous trial ended (Tune scheduling, result handling, actor reuse);
  the fraction is Σ overhead ÷ Σ (wall + gap). Reported for the steady state (each worker's
  first trial excluded: it loads the assets) — target ≤ 10 % — and for all trials.
- **bytes read per trial after a worker's first** — target 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

TARGET_OVERHEAD = 0.10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py perf grid", description=__doc__.split("\n\n")[1])
    parser.add_argument("spec", nargs="?", default=None, help="grid spec (default: the quickstart)")
    parser.add_argument(
        "--root",
        default=None,
        help="storage root holding (or receiving) θ0 and the experts (default: $WW_ROOT or ww-root)",
    )
    parser.add_argument("--out", default="perf_grid.parquet", help="Parquet file of the per-trial measurements")
    return parser


def trial_reports(grid_dir: Path) -> list[dict]:
    """The dict each trial reported to Tune (its last ``result.json`` line), from a grid's run dir."""
    reports = []
    for path in sorted(grid_dir.rglob("result.json")):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if lines:
            reports.append(json.loads(lines[-1]))
    return reports


def overhead_summary(reports: list[dict]) -> dict:
    """Overhead fractions and bytes read, steady state and overall (see the module doc)."""
    by_worker: dict[tuple, list[dict]] = defaultdict(list)
    for report in reports:
        by_worker[report.get("node_id"), report["worker_pid"]].append(report)
    steady = {"overhead": 0.0, "total": 0.0}
    overall = {"overhead": 0.0, "total": 0.0}
    later_assets, later_disk, per_trial = [], [], []
    for trials in by_worker.values():
        trials.sort(key=lambda r: r["started_at"])
        previous_end = None
        for index, trial in enumerate(trials):
            gap = 0.0 if previous_end is None else max(0.0, trial["started_at"] - previous_end)
            previous_end = trial["ended_at"]
            work = trial["merge_seconds"] + trial["eval_seconds"]
            overhead = trial["trial_seconds"] - work + gap
            total = trial["trial_seconds"] + gap
            per_trial.append({**trial, "gap_seconds": gap, "overhead_seconds": overhead, "first_on_worker": index == 0})
            overall["overhead"] += overhead
            overall["total"] += total
            if index > 0:
                steady["overhead"] += overhead
                steady["total"] += total
                later_assets.append(trial["assets_read_bytes"])
                if trial.get("disk_read_bytes") is not None:
                    later_disk.append(trial["disk_read_bytes"])
    fraction = lambda part: part["overhead"] / part["total"] if part["total"] > 0 else float("nan")  # noqa: E731
    return {
        "trials": len(reports),
        "workers": len(by_worker),
        "steady_overhead_fraction": fraction(steady),
        "overall_overhead_fraction": fraction(overall),
        "mean_trial_seconds": sum(r["trial_seconds"] for r in reports) / max(1, len(reports)),
        "max_assets_bytes_after_first": max(later_assets, default=None),
        "max_disk_bytes_after_first": max(later_disk, default=None),
        "per_trial": per_trial,
    }


def _scratch_root(storage, directory: Path):
    """A root sharing ``storage``'s cache and experts (symlinks) with empty results and runs."""
    from benchmark.results.storage import StorageRoot

    if not storage.on_local_disk:
        raise ValueError(
            f"perf grid shares the root's cache and experts through symlinks: give a local --root, not {storage.uri()}"
        )
    for name in ("cache", "experts"):
        (directory / name).symlink_to(Path(getattr(storage, name)).resolve(), target_is_directory=True)
    return StorageRoot.at(directory)


def main(argv: list[str] | None = None) -> int:
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.console import Console
    from rich.table import Table

    from benchmark.pipeline import run_spec
    from benchmark.results.storage import StorageRoot
    from benchmark.spec.schema import load_spec, quickstart_spec_path

    args = _parser().parse_args(argv)
    console = Console()
    spec = load_spec(args.spec or quickstart_spec_path())
    storage = StorageRoot.at(args.root or os.environ.get("WW_ROOT", "ww-root"))
    console.print(f"[bold]1/2[/] completing {spec.name!r} on {storage.root} (cached work is skipped)")
    run_spec(spec, storage, console=console)
    with tempfile.TemporaryDirectory(prefix="ww-perf-grid-") as scratch:
        scratch_root = _scratch_root(storage, Path(scratch))
        console.print("[bold]2/2[/] the whole grid again in a scratch root (shared cache and experts)")
        start = time.perf_counter()
        summary = run_spec(spec, scratch_root, console=console)
        grid_seconds = summary.seconds.get("grid", time.perf_counter() - start)
        reports = trial_reports(Path(scratch_root.runs) / "grid")
    if not reports:
        raise RuntimeError("the grid reported no trials; is every trial blocked by a failed expert?")
    result = overhead_summary(reports)
    work = sum(r["merge_seconds"] + r["eval_seconds"] for r in reports)

    table = Table(title=f"perf grid: {spec.name} · {result['trials']} trials on {result['workers']} worker(s)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    ok = result["steady_overhead_fraction"] <= TARGET_OVERHEAD
    table.add_row(
        "overhead, steady state (first trial per worker excluded)",
        f"{100 * result['steady_overhead_fraction']:.1f} %",
        f"≤ {100 * TARGET_OVERHEAD:.0f} % " + ("[green]yes[/]" if ok else "[red]no[/]"),
    )
    table.add_row("overhead, all trials", f"{100 * result['overall_overhead_fraction']:.1f} %", "")
    table.add_row("mean trial wall time", f"{result['mean_trial_seconds']:.2f} s", "")
    table.add_row("merge + eval, summed", f"{work:.1f} s", "")
    table.add_row("grid stage wall time (Tune start to end)", f"{grid_seconds:.1f} s", "")
    for label, key in (
        ("assets read per trial after the first (max)", "max_assets_bytes_after_first"),
        ("disk reads per trial after the first (max)", "max_disk_bytes_after_first"),
    ):
        value = result[key]
        table.add_row(
            label,
            "n/a" if value is None else f"{value:,} B",
            "0 " + ("" if value is None else "[green]yes[/]" if value == 0 else "[red]no[/]"),
        )
    console.print(table)

    stamp = datetime.now(timezone.utc).isoformat()
    rows = [
        {
            "spec": spec.name,
            "started_at": stamp,
            "host": platform.node(),
            "grid_seconds": grid_seconds,
            "steady_overhead_fraction": result["steady_overhead_fraction"],
            "overall_overhead_fraction": result["overall_overhead_fraction"],
            **{
                k: trial.get(k)
                for k in (
                    "trial_seconds",
                    "merge_seconds",
                    "eval_seconds",
                    "gap_seconds",
                    "overhead_seconds",
                    "first_on_worker",
                    "worker_pid",
                    "node_id",
                    "assets_read_bytes",
                    "disk_read_bytes",
                    "status",
                )
            },
        }
        for trial in result["per_trial"]
    ]
    from benchmark.results.storage import atomic_write

    with atomic_write(Path(args.out)) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    console.print(f"per-trial measurements → {args.out}")
    return 0
