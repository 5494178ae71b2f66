"""Command line: ``run_bench.py [run SPEC] [--root DIR] [--dry-run] | report [ROOT] | rehearse | ...``.

With no arguments it runs the embedded quickstart spec end to end. Usage errors (a bad spec, a
missing file) print one line naming the problem and the fix and exit with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

DEFAULT_ROOT = os.environ.get("WW_ROOT", "ww-root")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_bench.py",
        description="Weight Weaving benchmark harness. With no command: run the embedded quickstart spec.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a grid spec (resumes: finished work is skipped)")
    run.add_argument("spec", nargs="?", default=None, help="YAML spec (default: the embedded quickstart)")
    run.add_argument("--root", default=DEFAULT_ROOT, help=f"storage root (default: {DEFAULT_ROOT}, or $WW_ROOT)")
    run.add_argument("--dry-run", action="store_true", help="print the plan (experts, trials) and exit")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    report = sub.add_parser("report", help="leaderboards, the paper's tables and figures of a storage root")
    report.add_argument("root", nargs="?", default=DEFAULT_ROOT, help=f"storage root (default: {DEFAULT_ROOT})")
    report.add_argument(
        "--table",
        default="leaderboard",
        choices=REPORT_TABLES,
        help="which table (default: leaderboard; all = every table the results support)",
    )
    report.add_argument(
        "--by",
        default=None,
        metavar="COLS",
        help="leaderboard grouping, comma-separated result columns (default: model,setup,merger,pooling,variant)",
    )
    report.add_argument(
        "--format",
        default="table",
        choices=REPORT_FORMATS,
        dest="fmt",
        help="table (rich, terminal), markdown, latex or csv (default: table)",
    )
    report.add_argument(
        "--metric",
        default="accuracy",
        choices=("accuracy", "normalized"),
        help="measure of the paper's tables (the leaderboard shows both)",
    )
    report.add_argument(
        "--weaving",
        default=None,
        metavar="POOLING,VARIANT",
        help="the weaving configuration the oracle table compares with, fixed in advance "
        "(default: avg,collaborative — the paper's)",
    )
    report.add_argument(
        "--ci",
        default=95.0,
        type=float,
        metavar="LEVEL",
        help="confidence level of the paired bootstrap intervals in the weaving-gain, oracle and "
        "--compare tables (default: 95; 0 hides them)",
    )
    report.add_argument(
        "--compare",
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="paired comparison of two configurations named as in the leaderboard, e.g. "
        "ties/avg/A* ties/none: difference, bootstrap CI, per-seed spread, McNemar per task",
    )
    report.add_argument(
        "--out", default=None, metavar="FILE", help="write the tables to FILE (atomic) instead of the terminal"
    )
    report.add_argument("--figures", default=None, metavar="DIR", help="also write the PNG figures into DIR")
    report.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    analyze = sub.add_parser("analyze", help="analyses of a run's experts: geometry, interference, output space, scale")
    analyze.add_argument("spec", help="the YAML spec whose experts to analyse (run it first)")
    analyze.add_argument("--root", default=DEFAULT_ROOT, help=f"storage root (default: {DEFAULT_ROOT}, or $WW_ROOT)")
    analyze.add_argument(
        "--only",
        default=None,
        metavar="NAMES",
        help="comma-separated subset of geometry,interference,output-space,scale (default: all)",
    )
    analyze.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default: <root>/analysis/<spec-name>)"
    )
    analyze.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    data = sub.add_parser("data", help="check / prepare real datasets under the data root (see docs/DATA.md)")
    data.add_argument("args", nargs=argparse.REMAINDER, help="check [--data-root DIR] | prepare NAME")
    rehearse = sub.add_parser(
        "rehearse",
        help="the paper's pipeline at a real model's size on this machine (random θ0, fake data), every stage measured",
    )
    rehearse.add_argument("--model", default="ViT-B-32", choices=("ViT-B-32", "ViT-B-16", "ViT-L-14"))
    rehearse.add_argument(
        "--setup",
        default="mtl",
        choices=("mtl", "cil", "dg"),
        help="which of the paper's specs to rehearse (default: mtl)",
    )
    rehearse.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="experts to merge (default: the paper's; mtl: 2-20, below 8 the fewest-class tasks, "
        "above 8 the 20-task extension)",
    )
    rehearse.add_argument(
        "--root", default="ww-rehearse", help="scratch folder: θ0, fake data, storage root, stage table"
    )
    rehearse.add_argument("--keep", action="store_true", help="keep θ0, fake data, caches, experts and Ray runs")
    rehearse.add_argument("--steps", type=int, default=2, help="fine-tuning steps per expert (default: 2)")
    rehearse.add_argument("--batch-size", type=int, default=8, help="fine-tuning batch (default: 8)")
    rehearse.add_argument("--test-images", type=int, default=32, help="test images per task (default: 32)")
    for axis in ("mergers", "poolings", "variants"):
        rehearse.add_argument(
            f"--{axis}",
            default=None,
            metavar="A,B",
            help=f"comma-separated {axis} instead of the paper's (a quicker rehearsal)",
        )
    rehearse.add_argument(
        "--bank-route",
        default=None,
        choices=("auto", "object_store", "file"),
        help="resources.bank_route of the rehearsed spec (default: the spec's)",
    )
    rehearse.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    toy = sub.add_parser(
        "toy", help="the embedded toy world: pretrain (rebuild the shipped θ0), probe (measure a world)"
    )
    toy.add_argument("args", nargs=argparse.REMAINDER, help="pretrain [--out FILE] | probe [...] (see toy CMD --help)")
    perf = sub.add_parser(
        "perf",
        help="performance benchmarks: merge (mergers/weaving, synthetic bank), eval (cached vs decoded eval), "
        "grid (Ray Tune orchestration overhead and bytes read per trial)",
    )
    perf.add_argument("what", choices=sorted(PERF_COMMANDS), help="which benchmark")
    perf.add_argument("args", nargs=argparse.REMAINDER, help="arguments of that benchmark (see perf WHAT --help)")
    return parser


#: ``run_bench.py report --table`` / ``--format`` choices (kept here so ``--help`` needs no heavy import).
REPORT_TABLES = ("leaderboard", "weaving-gain", "pooling-ablation", "oracle", "all")
REPORT_FORMATS = ("table", "markdown", "latex", "csv")

#: ``run_bench.py perf WHAT`` → module whose ``main(argv) -> int`` runs that benchmark.
PERF_COMMANDS = {"merge": "benchmark.perf.merge", "eval": "benchmark.perf.evaluation", "grid": "benchmark.perf.grid"}


def cmd_perf(args, console: Console) -> int:
    import importlib

    return importlib.import_module(PERF_COMMANDS[args.what]).main(args.args)


def cmd_data(args, console: Console) -> int:
    from benchmark.data.cli import main as data_main

    return data_main(args.args)


def cmd_toy(args, console: Console) -> int:
    from benchmark.toy.commands import main as toy_main

    return toy_main(args.args)


def cmd_run(args, console: Console) -> int:
    from benchmark.console import RayOutput
    from benchmark.pipeline import run_spec
    from benchmark.report.leaderboard import render_leaderboard
    from benchmark.results.storage import StorageRoot
    from benchmark.results.store import read_results
    from benchmark.spec.schema import load_spec, quickstart_spec_path

    spec = load_spec(args.spec or quickstart_spec_path())
    storage = StorageRoot.at(args.root)
    start = time.perf_counter()
    if args.dry_run:
        run_spec(spec, storage, dry_run=True, console=console)
        return 0
    if args.debug:  # Ray's and Tune's own output on the terminal, as they print it
        os.environ.setdefault("WW_RAY_LOGS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    log = ray_log_path(storage)
    import ray

    ours = not ray.is_initialized()
    with contextlib.nullcontext() if args.debug else RayOutput(log):
        summary = run_spec(spec, storage, console=console)
        render_leaderboard(read_results(storage), console)
        console.print(f"done in {time.perf_counter() - start:.0f} s · results in {storage.results}", highlight=False)
        if ours:
            ray.shutdown()  # inside: a raylet warning that arrives late lands in the log, not after "done"
    if not args.debug:
        console.print(f"Ray's own log: {log} (--debug shows it here)", style="dim", highlight=False)
    return 1 if (summary.experts_failed or summary.trials_blocked) else 0


def ray_log_path(storage) -> Path:
    """Where Ray's and Tune's own output goes: the root's logs/ folder, or a temp folder for a bucket root."""
    import tempfile

    if storage.on_local_disk:
        return Path(storage.root) / "logs" / "ray.log"
    return Path(tempfile.gettempdir()) / "ww-logs" / "ray.log"


def cmd_rehearse(args, console: Console) -> int:
    from benchmark.perf.rehearse import Sizes, rehearse

    for name in ("steps", "batch_size", "test_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    result = rehearse(
        args.model,
        args.setup,
        args.tasks,
        args.root,
        keep=args.keep,
        sizes=Sizes(args.steps, args.batch_size, args.test_images),
        bank_route=args.bank_route,
        grid={
            axis: getattr(args, axis).split(",") for axis in ("mergers", "poolings", "variants") if getattr(args, axis)
        },
        console=console,
    )
    summary = result.summary
    return 1 if (summary.experts_failed or summary.trials_blocked) else 0


def cmd_report(args, console: Console) -> int:
    from pathlib import Path

    from benchmark.report.formats import render_rich, render_text
    from benchmark.report.leaderboard import error_count, newest_revisions, ok_rows, parse_by, refuse_inside_results
    from benchmark.report.tables import build_tables, parse_weaving
    from benchmark.results.storage import StorageRoot, write_text_atomic
    from benchmark.results.store import read_results

    storage = StorageRoot.at(args.root)
    if not storage.results.exists():
        raise FileNotFoundError(
            f"no results under {storage.root}; run a spec first (python run_bench.py run SPEC --root {args.root})"
        )
    if args.by is not None and args.table not in ("leaderboard", "all"):
        raise ValueError(f"--by groups the leaderboard; --table {args.table} has a fixed layout (drop --by)")
    by = parse_by(args.by)
    if args.weaving is not None and args.table not in ("oracle", "all"):
        raise ValueError(
            f"--weaving fixes the oracle table's weaving configuration; --table {args.table} has none "
            "(use --table oracle or all, or drop --weaving)"
        )
    weaving = parse_weaving(args.weaving)
    out = refuse_inside_results(storage, Path(args.out)) if args.out else None
    figures = refuse_inside_results(storage, Path(args.figures)) if args.figures else None
    if out is not None and out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name, e.g. {out / ('report.' + _SUFFIX[args.fmt])}")
    table, revision_notes = newest_revisions(read_results(storage))
    if not ok_rows(table):
        raise ValueError(
            f"no finished trials under {storage.results} ({error_count(table)} error row(s)); "
            f"run a spec first (python run_bench.py run SPEC --root {args.root})"
        )
    if args.compare is not None:
        if args.table != "leaderboard" or args.by is not None or args.weaving is not None:
            raise ValueError("--compare prints its own tables; drop --table, --by and --weaving")
        from benchmark.report.compare import compare_tables

        tables, notes = compare_tables(table, *args.compare, metric=args.metric, ci=args.ci), []
    else:
        tables, notes = build_tables(table, args.table, by, args.metric, weaving, args.ci)
    for built in tables:  # in every format: no table silently pools revisions, and each says what it left out
        built.notes.extend(revision_notes)
    if out is not None:
        write_text_atomic(out, render_text(tables, args.fmt))
        console.print(f"wrote {args.table} ({args.fmt}) to {out}", highlight=False, markup=False)
    elif args.fmt == "table":
        render_rich(tables, console)
    else:
        console.out(render_text(tables, args.fmt), highlight=False, end="")
    for note in notes:
        console.print(note, style="yellow", highlight=False, markup=False)
    if error_count(table):
        console.print(
            f"[red]{error_count(table)} error row(s) present; see the 'error' column of the Parquet dataset[/]"
        )
    if figures is not None:
        from benchmark.report.figures import write_figures

        paths, figure_notes = write_figures(table, figures, args.metric)
        for path in paths:
            console.print(f"wrote figure {path}", highlight=False, markup=False)
        for note in figure_notes:
            console.print(note, style="yellow", highlight=False, markup=False)
    return 0


_SUFFIX = {"table": "txt", "markdown": "md", "latex": "tex", "csv": "csv"}


def cmd_analyze(args, console: Console) -> int:
    from benchmark.analyze import parse_only, run_analyses
    from benchmark.results.storage import StorageRoot
    from benchmark.spec.schema import load_spec

    only = parse_only(args.only)
    spec = load_spec(args.spec)
    start = time.perf_counter()
    summary = run_analyses(
        spec, StorageRoot.at(args.root), only=only, out=args.out, console=console, spec_path=args.spec
    )
    files = sum(len(paths) for paths in summary.written.values())
    console.print(
        f"analyses {', '.join(summary.written)}: {files} file(s) in {summary.out} "
        f"({time.perf_counter() - start:.0f} s)",
        highlight=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command is None:
        args = _parser().parse_args([*(["--debug"] if args.debug else []), "run"])
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 1000  # piped or redirected: tables whole, lines unbroken (not cut at 80 columns)
    from benchmark.results.preflight import InsufficientSpaceError
    from benchmark.spec.schema import SpecError

    try:
        commands = {
            "run": cmd_run,
            "report": cmd_report,
            "perf": cmd_perf,
            "data": cmd_data,
            "analyze": cmd_analyze,
            "rehearse": cmd_rehearse,
            "toy": cmd_toy,
        }
        return commands[args.command](args, console)
    except (SpecError, FileNotFoundError, PermissionError, ValueError, InsufficientSpaceError) as exc:
        if args.debug:
            raise
        # escaped: messages quote lists like [inf] or [name], which rich would read as markup tags;
        # soft-wrapped: one line per problem whatever the terminal width
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; finished trials are kept and the next run resumes[/]")
        return 130
