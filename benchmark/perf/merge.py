"""``run_bench.py perf merge``: speed and memory of every merger and of weaving on a synthetic bank.

The bank is shaped exactly like an open_clip image encoder (every float tensor of
``create_model(name).visual.state_dict()``, names and shapes, built on the meta device so no weight
is downloaded or allocated), with T fp32 task vectors of realistic magnitude: entries ~ N(0, σ²)
with σ = 1e-3 · (per-row scale, log-normal and shared by the tasks) · (per-task factor in [0.5, 2]).

Each measurement runs in a fresh subprocess that loads the bank (into memory, or memory-mapped with
``--out-of-core``), resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``),
runs one operation and reads the new high-water mark (``VmHWM``): the exact peak resident memory of
that operation, including the bank's resident pages, with no sampling gap and no allocator state
left over from earlier measurements. Peaks are reported in GB and in "models" (fp32 size of one
image encoder), counting everything above the interpreter's own footprint before the bank was
loaded. A plain streaming pass (sum the T task vectors column block by column block into one
output) measured in the same run is the reference for every ratio. Each row also records the CPU
seconds the process used and the machine's 1-minute load average when it started: on a shared
machine wall-clock times stretch with the load, CPU time much less. Results go to a rich table
and a Parquet file so runs can be compared.

``--one-shot`` measures what a researcher's script does instead: a fresh process that holds T task
vectors as ordinary state dicts (one tensor per entry, as loaded from checkpoints), calls
``ww.merge(name, list_of_state_dicts)`` (or ``ww.weave``) once and gets a dict back, with nothing
compiled or warmed up beforehand. Each row reports the call's wall seconds (compiling included,
if the kernel mode compiles), the whole process's wall seconds from the parent's side (start,
imports, building the inputs, the call), and the peak resident memory during the call above what
the inputs already occupy. ``--kernels`` takes several modes there so the default ``auto`` can be
compared with ``eager`` and ``compiled`` in one table; ``--cold-cache`` gives every process an
empty inductor cache directory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import json
import math
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "tiny")
STREAM_TARGET = {  # the issue's targets, as a multiple of the streaming pass
    "weight_averaging": 3.0,
    "task_arithmetic": 3.0,
    "magmax": 3.0,
    "randmix": 3.0,
    "breadcrumbs": 3.0,
    "dare_ta": 3.0,
    "ties": 5.0,
    "dare_ties": 5.0,
    "consensus": 5.0,
    "pcb": 5.0,
}
SECONDS_TARGET = {"tsv_m": 60.0, "iso_c": 60.0, "iso_cts": 60.0}
WEAVE_TIME_TARGET = 1.5
ONE_SHOT_SECONDS_TARGET = {"magmax": 3.4, "ties": 45.6}
"""FusionBench's one-shot times in seconds (issue 15, docs/PERF.md): a one-shot ww merge must not be slower."""
ONE_SHOT_MEMORY_TARGET = 1.0
"""Peak resident memory of a one-shot call above its inputs, in models (the output)."""
ONE_SHOT_SLACK_BYTES = 128 << 20
"""Allowed on top of the one-model target: the blocks in flight (two per worker, each a gathered
4 MiB block plus the eager kernels' temporaries of that size) and the heap the allocator keeps
between trims (`ww.engine.streaming`); it depends on neither T nor P."""
TINY_LAYOUT = (
    ("class_embedding", (16,)),
    ("positional_embedding", (5, 16)),
    ("proj", (16, 8)),
    ("conv1.weight", (16, 3, 4, 4)),
    ("ln_pre.weight", (16,)),
    ("ln_pre.bias", (16,)),
    ("transformer.resblocks.0.attn.in_proj_weight", (48, 16)),
    ("transformer.resblocks.0.attn.in_proj_bias", (48,)),
    ("transformer.resblocks.0.attn.out_proj.weight", (16, 16)),
    ("transformer.resblocks.0.mlp.c_fc.weight", (64, 16)),
    ("transformer.resblocks.0.mlp.c_proj.weight", (16, 64)),
    ("ln_post.weight", (16,)),
)
COLUMNS = (
    "kind",
    "merger",
    "pooling",
    "k",
    "collaborative",
    "seconds",
    "cpu_seconds",
    "load_1min",
    "gb_per_s",
    "peak_rss_gb",
    "kernels",
    "warmup_seconds",
    "baseline_rss_gb",
    "peak_models",
    "ratio_vs_stream",
    "ratio_vs_merger",
    "target",
    "meets_target",
    "model",
    "tasks",
    "params",
    "bank_gb",
    "out_of_core",
    "threads",
    "repeat",
    "host",
    "started_at",
    "error",
    "process_seconds",
    "input_seconds",
    "compiled",
    "over_input_models",
    "ratio_vs_eager",
    "cold_cache",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_bench.py perf merge",
        description="Time and memory of every ww merger and of Weight Weaving on a synthetic bank shaped "
        "like an open_clip image encoder (no download).",
    )
    parser.add_argument(
        "--model",
        default="ViT-B-32",
        choices=MODELS,
        help="open_clip architecture whose image-encoder layout the bank copies (tiny: a smoke-test layout)",
    )
    parser.add_argument("--tasks", type=int, default=8, help="number of task vectors T (default 8)")
    parser.add_argument(
        "--mergers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="mergers to measure (default: every registered merger); commas also separate names",
    )
    parser.add_argument(
        "--weave",
        nargs="*",
        default=None,
        metavar="NAME",
        help="base mergers to weave (default: the measured mergers; give none to skip weaving)",
    )
    parser.add_argument(
        "--poolings", nargs="+", default=["avg", "randmix"], help="weaving poolings (default: avg randmix)"
    )
    parser.add_argument(
        "--k", type=int, default=20, help="number of λ values K of the weaving grid (0.1, 0.2, ..., K/10)"
    )
    parser.add_argument("--out", default=None, help="Parquet output (default: perf/merge-<timestamp>.parquet)")
    parser.add_argument(
        "--out-of-core", action="store_true", help="merge from a memory-mapped bank file on disk instead of memory"
    )
    parser.add_argument("--bank-dir", default=None, help="where the bank file is written (default: next to --out)")
    parser.add_argument("--keep-bank", action="store_true", help="keep the bank file afterwards")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="fresh runs per measurement, the fastest reported (default 3 in memory, 1 "
        "out of core): a first run on a VM mostly times the host backing fresh pages",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic task vectors")
    parser.add_argument(
        "--kernels",
        nargs="+",
        choices=("auto", "compiled", "eager"),
        default=None,
        help="ww's block kernels: torch.compile-d or eager (default: WW_KERNELS, else auto); "
        "compiling happens in an untimed warm-up, reported apart (with --one-shot: inside the "
        "timed call, and several modes may be given to compare them)",
    )
    parser.add_argument(
        "--one-shot",
        action="store_true",
        help="one merge per fresh process from a list of state dicts, no warm-up: what a script "
        "calling ww.merge once pays (call and process seconds, peak memory above the inputs)",
    )
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="with --one-shot: give every process an empty inductor cache directory",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process instead of a fresh subprocess per measurement "
        "(faster; peaks then include allocator state left by earlier measurements)",
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``run_bench.py perf merge [args]``; returns the process exit code."""
    args = _parser().parse_args(argv)
    import torch
    from rich.console import Console

    import ww

    console = Console()
    mergers = _names(args.mergers, list(ww.MERGERS))
    weave = mergers if args.weave is None else _names(args.weave, [])
    for name in [*mergers, *weave, *args.poolings]:
        if name not in ww.MERGERS and name not in ww.POOLINGS:
            raise ValueError(
                f"unknown merger or pooling {name!r}; known: {sorted(ww.MERGERS)} and {sorted(ww.POOLINGS)}"
            )
    if args.repeat is None:
        args.repeat = 1 if args.out_of_core else 3
    if args.one_shot:
        return one_shot_main(args, mergers, [] if args.weave is None else weave, console)
    if args.cold_cache:
        raise ValueError("--cold-cache only applies to --one-shot (the steady-state runs compile in a warm-up)")
    if args.kernels and len(args.kernels) > 1:
        raise ValueError("give one --kernels mode (several are compared only with --one-shot)")
    if args.kernels:
        os.environ["WW_KERNELS"] = args.kernels[0]  # read by the measuring subprocesses
    if args.tasks < 1 or args.k < 1 or args.repeat < 1:
        raise ValueError("--tasks, --k and --repeat must be positive")

    started = datetime.now(timezone.utc)
    out = Path(args.out or Path("perf") / f"merge-{started.strftime('%Y%m%d-%H%M%S')}.parquet")
    layout = model_layout(args.model)
    params = sum(math.prod(shape) for _, shape in layout)
    model_bytes = params * 4
    bank_bytes = model_bytes * args.tasks
    bank_dir = Path(args.bank_dir or out.parent)
    bank_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(bank_dir).free
    if free < bank_bytes * 1.05 + (1 << 28):
        raise OSError(
            f"{bank_dir} has {free / 1e9:.1f} GB free; the bank needs {bank_bytes / 1e9:.1f} GB (use --bank-dir)"
        )
    if not args.out_of_core and bank_bytes > 0.6 * _total_memory():
        raise MemoryError(f"a {bank_bytes / 1e9:.1f} GB bank does not fit in memory here; add --out-of-core")

    console.print(
        f"[bold]perf merge[/] {args.model}: {len(layout)} tensors, {params:,} parameters; T = {args.tasks} "
        f"-> bank {bank_bytes / 1e9:.2f} GB fp32 ({'memory-mapped from disk' if args.out_of_core else 'in memory'}), "
        f"{torch.get_num_threads()} threads"
    )
    bank_path = Path(tempfile.mkstemp(prefix="ww-perf-bank-", suffix=".safetensors", dir=bank_dir)[1])
    rows: list[dict] = []
    try:
        start = time.perf_counter()
        write_synthetic_bank(bank_path, layout, args.tasks, args.seed)
        console.print(f"bank written to {bank_path} in {time.perf_counter() - start:.1f} s")
        base = {
            "model": args.model,
            "tasks": args.tasks,
            "params": params,
            "bank_gb": bank_bytes / 1e9,
            "out_of_core": bool(args.out_of_core),
            "threads": torch.get_num_threads(),
            "repeat": args.repeat,
            "host": socket.gethostname(),
            "started_at": started.isoformat(),
        }
        grid = [round(0.1 * (index + 1), 10) for index in range(args.k)]
        streams = [{"kind": "stream", "merger": variant} for variant in STREAM_VARIANTS]
        jobs = list(streams)
        jobs += [{"kind": "merge", "merger": name} for name in mergers]
        jobs += [
            {"kind": "weave", "merger": name, "pooling": pooling, "lambdas": grid}
            for name in weave
            for pooling in args.poolings
        ]
        jobs += streams
        for job in jobs:
            result = measure(job, bank_path, args.out_of_core, args.repeat, args.in_process)
            row = _row(job, result, bank_bytes, model_bytes, len(grid))
            row.update(base)
            rows.append(row)
            console.print(
                f"  {row['kind']:6s} {row['merger'] or '':18s} {row['pooling'] or '':8s} "
                f"{_fmt(row['seconds'], '.3f')} s  peak {_fmt(row['peak_rss_gb'], '.2f')} GB"
                + (f"  [red]{row['error']}[/]" if row["error"] else "")
            )
    finally:
        if args.keep_bank:
            console.print(f"bank kept at {bank_path}")
        else:
            bank_path.unlink(missing_ok=True)
    add_ratios(rows)
    render(
        rows,
        console,
        title=f"ww merge performance · {args.model} · T = {args.tasks} · K = {args.k}"
        f"{' · out-of-core' if args.out_of_core else ''}",
    )
    write_parquet(rows, out)
    console.print(f"saved {out}")
    return 1 if any(row["error"] for row in rows) else 0


def _names(given: list[str] | None, default: list[str]) -> list[str]:
    if given is None:
        return default
    return [name for item in given for name in item.split(",") if name]


def model_layout(model: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, shape) of every float tensor of the model's image encoder, in state-dict order."""
    if model == "tiny":
        return TINY_LAYOUT
    import logging

    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # "no pretrained weights loaded" is the point here
    clip = open_clip.create_model(model, pretrained=None, device="meta")
    return tuple((name, tuple(t.shape)) for name, t in clip.visual.state_dict().items() if t.is_floating_point())


def write_synthetic_bank(path: Path, layout, tasks: int, seed: int) -> None:
    """T task vectors ~ N(0, (1e-3 · row scale · task factor)²) written one at a time (bounded memory)."""
    import torch

    import ww

    names = [f"task_{index}" for index in range(tasks)]
    scales = torch.Generator().manual_seed(seed)
    row_scales = {}
    for name, shape in layout:
        rows = shape[0] if len(shape) >= 2 else 1
        row_scales[name] = torch.empty(rows).log_normal_(0.0, 0.5, generator=scales)
    with ww.BankWriter(path, layout, names) as writer:
        for index in range(tasks):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + index + 1)
            factor = 0.5 + 1.5 * float(torch.rand((), generator=generator))
            for name, shape in layout:
                values = torch.randn(shape, generator=generator)
                scale = row_scales[name] * (1e-3 * factor)
                values = (
                    values.view(scale.shape[0], -1).mul_(scale.unsqueeze(1)) if len(shape) >= 2 else values.mul_(scale)
                )
                writer.write(values)


def measure(job: dict, bank_path: Path, out_of_core: bool, repeat: int, in_process: bool = False) -> dict:
    """Run ``job`` in fresh subprocesses (one per repetition); the fastest run's figures."""
    context = multiprocessing.get_context("spawn")
    best = None
    for _ in range(repeat):
        if in_process:
            result = _child(job, str(bank_path), out_of_core)
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                try:
                    result = pool.submit(_child, job, str(bank_path), out_of_core).result()
                except Exception as error:  # a crashed child (e.g. killed for memory) is a result too
                    result = {"error": f"{type(error).__name__}: {error}"}
        if result.get("error"):
            return result
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    return best


def _child(job: dict, bank_path: str, out_of_core: bool) -> dict:
    """One measurement in a fresh interpreter: load the bank, reset the RSS peak, run, read the peak."""

    import ww

    runtime = _status("VmRSS")
    bank = ww.open_bank(bank_path)
    if not out_of_core:
        data = bank.data.clone()  # into anonymous memory; the mapping is dropped below
        layout, names = bank.layout, bank.task_names
        del bank
        gc.collect()
        bank = ww.TaskVectorBank.from_flat(data, layout, names)
    from ww import kernels

    # steady state is what a process that merges many times gets (a Tune worker): say so, so
    # ``auto`` decides as it does there (a one-shot script: --one-shot)
    many = contextlib.ExitStack()
    many.enter_context(kernels.expect_many_merges())
    compiled = job["kind"] != "stream" and kernels.compiled_for(bank.data.shape[1])
    warmup = _warm_up(job, bank, Path(bank_path).parent if out_of_core else None) if compiled else 0.0
    try:
        _reset_peak()
        baseline = _status("VmRSS")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        cpu = time.process_time()
        start = time.perf_counter()
        if job["kind"] == "stream":
            streaming_pass(bank, job["merger"])
        else:
            _run_job(job, bank)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
        peak = _status("VmHWM")
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        many.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load": load,
        "peak": peak,
        "baseline": baseline,
        "runtime": runtime,
        "kernels": None if job["kind"] == "stream" else ("compiled" if compiled else "eager"),
        "warmup": warmup,
    }


def _run_job(job: dict, bank) -> None:
    import ww

    if job["kind"] == "merge":
        ww.merge(job["merger"], bank)
    else:
        ww.weave(bank, job["merger"], lambdas=job["lambdas"], pooling=job["pooling"], collaborative=True, seed=0)


WARMUP_PARAMS = 1 << 21
"""Parameters per task of the warm-up bank: the leading tensors of the real layout."""


def _warm_up(job: dict, bank, out_of_core_dir: Path | None = None) -> float:
    """Compile the job's kernels on a small bank cut from the real one (untimed); its seconds.

    The leading tensors of the layout give the kernels the block shapes of the real run (tensors
    larger and smaller than a block), so the timed run starts with its compiled variants cached.
    With ``out_of_core_dir`` the cut is memory-mapped from a file there, like the real bank: a
    resident bank takes other code paths (one-pass TIES/PCB, `ww.engine.speculation`) and would leave
    the out-of-core path's kernels to compile inside the timed run.
    """
    import ww
    from ww import kernels

    start = time.perf_counter()
    layout, total = [], 0
    for name, shape in bank.layout:
        layout.append((name, shape))
        total += math.prod(shape)
        if total >= WARMUP_PARAMS:
            break
    small = ww.TaskVectorBank.from_flat(bank.data[:, :total].clone(), layout, bank.task_names)
    with contextlib.ExitStack() as stack:
        if out_of_core_dir is not None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out_of_core_dir, prefix="ww-warm-up-")))
            ww.save_bank(folder / "bank.safetensors", small)
            small = ww.open_bank(folder / "bank.safetensors")
        with kernels.use("compiled"):
            _run_job(job, small)
        del small
    return time.perf_counter() - start


STREAM_VARIANTS = ("torch.sum", "ww blocks")
"""Two plain streaming passes, both reading every task vector once and writing one output:
``torch.sum`` over column chunks with torch's own threads, and the same sum through ww's block
engine (worker threads, page release) without validation. Ratios use the faster of all their runs."""


def streaming_pass(bank, variant: str = "torch.sum") -> None:
    """The reference: read every task vector once, write one output (Σt τt, column block by block)."""
    import torch

    if variant == "ww blocks":
        import dataclasses

        stream = dataclasses.replace(bank.stream(), check_finite=False)  # the mergers' engine, no validation
        stream.map(lambda tau, block: tau.sum(dim=0))
        return
    data = bank.data
    num_tasks, num_params = data.shape
    out = torch.empty(num_params, dtype=data.dtype)
    release = getattr(bank, "_release", None)
    step = max(1, (1 << 22) // num_tasks)
    for start in range(0, num_params, step):
        stop = min(num_params, start + step)
        torch.sum(data[:, start:stop], dim=0, out=out[start:stop])
        if release is not None:
            release(start, stop)
    if release is not None:
        release.flush()


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if field == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return 0


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); elsewhere the peak includes the loading."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _row(job: dict, result: dict, bank_bytes: int, model_bytes: int, k: int) -> dict:
    row = {column: None for column in COLUMNS}
    row.update(
        kind=job["kind"],
        merger=job.get("merger"),
        pooling=job.get("pooling"),
        k=k if job["kind"] == "weave" else None,
        collaborative=True if job["kind"] == "weave" else None,
        error=result.get("error"),
    )
    if not result.get("error"):
        seconds = result["seconds"]
        row.update(
            seconds=seconds,
            cpu_seconds=result.get("cpu_seconds"),
            load_1min=result.get("load"),
            gb_per_s=bank_bytes / seconds / 1e9 if seconds > 0 else None,
            peak_rss_gb=result["peak"] / 1e9,
            baseline_rss_gb=result["baseline"] / 1e9,
            peak_models=(result["peak"] - result["runtime"]) / model_bytes,
            kernels=result.get("kernels"),
            warmup_seconds=result.get("warmup"),
        )
    return row


def add_ratios(rows: list[dict]) -> None:
    """Ratios vs the streaming pass (the fastest of its runs) and, for weaving, vs its base merger; targets."""
    streams = [row["seconds"] for row in rows if row["kind"] == "stream" and row["seconds"]]
    stream = min(streams) if streams else None
    merges = {row["merger"]: row for row in rows if row["kind"] == "merge"}
    for row in rows:
        if row["seconds"] is None:
            continue
        if stream:
            row["ratio_vs_stream"] = row["seconds"] / stream
        if row["kind"] == "merge":
            if row["merger"] in STREAM_TARGET and row["ratio_vs_stream"] is not None:
                limit = STREAM_TARGET[row["merger"]]
                row["target"], row["meets_target"] = f"<= {limit:g}x stream", row["ratio_vs_stream"] <= limit
            elif row["merger"] in SECONDS_TARGET:
                limit = SECONDS_TARGET[row["merger"]]
                row["target"], row["meets_target"] = f"<= {limit:g} s", row["seconds"] <= limit
        elif row["kind"] == "weave":
            base = merges.get(row["merger"])
            memory_limit = row["tasks"] + 3
            memory_ok = row["peak_models"] is not None and row["peak_models"] <= memory_limit
            if base and base["seconds"]:
                row["ratio_vs_merger"] = row["seconds"] / base["seconds"]
                row["target"] = f"<= {WEAVE_TIME_TARGET:g}x merger, <= {memory_limit} models"
                row["meets_target"] = row["ratio_vs_merger"] <= WEAVE_TIME_TARGET and memory_ok
            else:
                row["target"], row["meets_target"] = f"<= {memory_limit} models", memory_ok


def render(rows: list[dict], console, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for header in (
        "kind",
        "merger",
        "pooling",
        "kernels",
        "seconds",
        "warm-up s",
        "CPU s",
        "load",
        "GB/s",
        "peak GB",
        "peak (models)",
        "x stream",
        "x merger",
        "target",
        "ok",
    ):
        table.add_column(
            header, justify="left" if header in ("kind", "merger", "pooling", "kernels", "target") else "right"
        )
    for row in rows:
        ok = "" if row["meets_target"] is None else ("[green]yes[/]" if row["meets_target"] else "[red]no[/]")
        table.add_row(
            row["kind"],
            row["merger"] or "",
            row["pooling"] or "",
            row["kernels"] or "",
            _fmt(row["seconds"], ".3f"),
            _fmt(row["warmup_seconds"] or None, ".1f"),
            _fmt(row["cpu_seconds"], ".1f"),
            _fmt(row["load_1min"], ".1f"),
            _fmt(row["gb_per_s"], ".2f"),
            _fmt(row["peak_rss_gb"], ".2f"),
            _fmt(row["peak_models"], ".1f"),
            _fmt(row["ratio_vs_stream"], ".2f"),
            _fmt(row["ratio_vs_merger"], ".2f"),
            row["target"] or (row["error"] or ""),
            ok,
        )
    console.print(table)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def write_parquet(rows: list[dict], path: Path) -> None:
    """The table as Parquet (atomically: temporary file, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{column: row.get(column) for column in COLUMNS} for row in rows])
    table = table.replace_schema_metadata(
        {"ww_perf": json.dumps({"python": platform.python_version(), "argv": sys.argv})}
    )
    temporary = path.with_name(path.name + ".partial")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def one_shot_main(args, mergers: list[str], weave: list[str], console) -> int:
    """``perf merge --one-shot``: every merger (and weave) once per fresh process, per kernel mode."""
    import torch

    started = datetime.now(timezone.utc)
    out = Path(args.out or Path("perf") / f"merge-one-shot-{started.strftime('%Y%m%d-%H%M%S')}.parquet")
    layout = model_layout(args.model)
    params = sum(math.prod(shape) for _, shape in layout)
    model_bytes = params * 4
    bank_bytes = model_bytes * args.tasks
    if args.out_of_core:
        raise ValueError("--one-shot merges state dicts held in memory; drop --out-of-core")
    if bank_bytes + 2 * model_bytes > 0.6 * _total_memory():
        raise MemoryError(
            f"{args.tasks} state dicts of {args.model} ({bank_bytes / 1e9:.1f} GB) plus the output do not "
            f"fit in memory here; use fewer --tasks"
        )
    bank_dir = Path(args.bank_dir or out.parent)
    bank_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(bank_dir).free
    if free < bank_bytes * 1.05 + (1 << 28):
        raise OSError(
            f"{bank_dir} has {free / 1e9:.1f} GB free; the inputs need {bank_bytes / 1e9:.1f} GB (use --bank-dir)"
        )
    modes = args.kernels or [os.environ.get("WW_KERNELS", "auto").strip().lower() or "auto"]
    console.print(
        f"[bold]perf merge --one-shot[/] {args.model}: {len(layout)} tensors, {params:,} parameters; "
        f"T = {args.tasks} state dicts ({bank_bytes / 1e9:.2f} GB fp32); kernels {', '.join(modes)}"
        f"{'; empty inductor cache per process' if args.cold_cache else ''}; {torch.get_num_threads()} threads"
    )
    bank_path = Path(tempfile.mkstemp(prefix="ww-perf-bank-", suffix=".safetensors", dir=bank_dir)[1])
    grid = [round(0.1 * (index + 1), 10) for index in range(args.k)]
    rows: list[dict] = []
    try:
        write_synthetic_bank(bank_path, layout, args.tasks, args.seed)
        base = {
            "model": args.model,
            "tasks": args.tasks,
            "params": params,
            "bank_gb": bank_bytes / 1e9,
            "out_of_core": False,
            "threads": torch.get_num_threads(),
            "repeat": args.repeat,
            "host": socket.gethostname(),
            "started_at": started.isoformat(),
            "cold_cache": bool(args.cold_cache),
        }
        jobs = [{"kind": "one-shot", "merger": name} for name in mergers]
        jobs += [
            {"kind": "one-shot weave", "merger": name, "pooling": pooling, "lambdas": grid}
            for name in weave
            for pooling in args.poolings
        ]
        for job in jobs:
            for mode in modes:  # modes side by side, so a change in the machine's load hits them alike
                result = measure_one_shot({**job, "mode": mode}, bank_path, args.repeat, args.cold_cache)
                row = _one_shot_row({**job, "mode": mode}, result, bank_bytes, model_bytes, len(grid))
                row.update(base)
                rows.append(row)
                console.print(
                    f"  {row['kind']:14s} {row['merger']:18s} {row['pooling'] or '':8s} {mode:8s} "
                    f"call {_fmt(row['seconds'], '.2f')} s  process {_fmt(row['process_seconds'], '.1f')} s  "
                    f"+{_fmt(row['over_input_models'], '.2f')} models"
                    + (f"  [red]{row['error']}[/]" if row["error"] else "")
                )
    finally:
        bank_path.unlink(missing_ok=True)
    add_one_shot_targets(rows, model_bytes)
    render_one_shot(
        rows,
        console,
        title=f"ww one-shot merge · {args.model} · T = {args.tasks} state dicts"
        f"{' · cold inductor cache' if args.cold_cache else ''}",
    )
    write_parquet(rows, out)
    console.print(f"saved {out}")
    return 1 if any(row["error"] for row in rows) else 0


def measure_one_shot(
    job: dict, bank_path: Path, repeat: int, cold_cache: bool = False, return_output: bool = False
) -> dict:
    """``job`` in ``repeat`` fresh processes (kernel mode ``job["mode"]``); the fastest call's figures.

    The mode and (with ``cold_cache``) an empty inductor cache directory reach the child through
    its environment, which it inherits when it is spawned.
    """
    context = multiprocessing.get_context("spawn")
    best = None
    for _ in range(repeat):
        saved = {key: os.environ.get(key) for key in ("WW_KERNELS", "TORCHINDUCTOR_CACHE_DIR")}
        with contextlib.ExitStack() as stack:
            os.environ["WW_KERNELS"] = job["mode"]
            if cold_cache:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="ww-inductor-")
                )
            start = time.perf_counter()
            try:
                with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    result = pool.submit(_one_shot_child, job, str(bank_path), return_output).result()
            except Exception as error:  # a crashed child (e.g. killed for memory) is a result too
                result = {"error": f"{type(error).__name__}: {error}"}
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
            result["process_seconds"] = time.perf_counter() - start
        if result.get("error"):
            return result
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    return best


def _one_shot_child(job: dict, bank_path: str, return_output: bool = False) -> dict:
    """A script's merge: T state dicts of separate tensors in memory, one ww call, a dict out."""
    try:
        import torch

        import ww
        from ww import kernels

        runtime = _status("VmRSS")
        start = time.perf_counter()
        bank = ww.open_bank(bank_path)
        layout = bank.layout
        pieces = list(bank.slices().values())
        inputs = [
            {name: bank.data[row, piece].view(shape).clone() for (name, shape), piece in zip(layout, pieces)}
            for row in range(len(bank))
        ]
        del bank
        gc.collect()
        input_seconds = time.perf_counter() - start
        _reset_peak()
        baseline = _status("VmRSS")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        cpu = time.process_time()
        start = time.perf_counter()
        if job["kind"] == "one-shot":
            merged = ww.merge(job["merger"], inputs)
        else:
            merged = ww.weave(
                inputs, job["merger"], lambdas=job["lambdas"], pooling=job["pooling"], collaborative=True, seed=0
            )
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
        peak = _status("VmHWM")
        if not isinstance(merged, dict) or [(name, tuple(t.shape)) for name, t in merged.items()] != list(layout):
            raise RuntimeError("the merge did not return a state dict shaped like its inputs")
        result = {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "load": load,
            "peak": peak,
            "baseline": baseline,
            "runtime": runtime,
            "input_seconds": input_seconds,
            "compiled": kernels.compiled_kernels(),
            "dtype": str(next(iter(merged.values())).dtype) if merged else None,
            "threads": torch.get_num_threads(),
        }
        if return_output:
            result["output"] = {name: tensor.clone() for name, tensor in merged.items()}
        return result
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}


def _one_shot_row(job: dict, result: dict, bank_bytes: int, model_bytes: int, k: int) -> dict:
    row = {column: None for column in COLUMNS}
    weave = job["kind"] != "one-shot"
    row.update(
        kind=job["kind"],
        merger=job["merger"],
        pooling=job.get("pooling"),
        kernels=job["mode"],
        k=k if weave else None,
        collaborative=True if weave else None,
        error=result.get("error"),
        process_seconds=result.get("process_seconds"),
    )
    if not result.get("error"):
        seconds = result["seconds"]
        row.update(
            seconds=seconds,
            cpu_seconds=result["cpu_seconds"],
            load_1min=result["load"],
            gb_per_s=bank_bytes / seconds / 1e9 if seconds > 0 else None,
            peak_rss_gb=result["peak"] / 1e9,
            baseline_rss_gb=result["baseline"] / 1e9,
            peak_models=(result["peak"] - result["runtime"]) / model_bytes,
            over_input_models=(result["peak"] - result["baseline"]) / model_bytes,
            input_seconds=result["input_seconds"],
            compiled=",".join(result["compiled"]),
        )
    return row


def add_one_shot_targets(rows: list[dict], model_bytes: int) -> None:
    """Every one-shot row: peak above its inputs <= one model; ``auto`` rows: no slower than ``eager``;
    MagMax and TIES merges: no slower than FusionBench (`ONE_SHOT_SECONDS_TARGET`)."""
    eager = {
        (row["kind"], row["merger"], row["pooling"]): row["seconds"]
        for row in rows
        if row["kernels"] == "eager" and row["seconds"]
    }
    memory_limit = ONE_SHOT_MEMORY_TARGET + ONE_SHOT_SLACK_BYTES / model_bytes
    for row in rows:
        if row["seconds"] is None:
            continue
        targets = [f"<= {ONE_SHOT_MEMORY_TARGET:g} model over input"]
        met = row["over_input_models"] <= memory_limit
        reference = eager.get((row["kind"], row["merger"], row["pooling"]))
        if reference:
            row["ratio_vs_eager"] = row["seconds"] / reference
            if row["kernels"] == "auto":
                targets.append("<= eager")
                met = met and row["seconds"] <= reference
        if row["kind"] == "one-shot" and row["merger"] in ONE_SHOT_SECONDS_TARGET:
            limit = ONE_SHOT_SECONDS_TARGET[row["merger"]]
            targets.append(f"<= {limit:g} s")
            met = met and row["seconds"] <= limit
        row["target"], row["meets_target"] = ", ".join(targets), met


def render_one_shot(rows: list[dict], console, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    headers = (
        "kind",
        "merger",
        "pooling",
        "kernels",
        "compiled",
        "call s",
        "process s",
        "inputs s",
        "CPU s",
        "load",
        "peak GB",
        "over inputs (models)",
        "x eager",
        "target",
        "ok",
    )
    for header in headers:
        table.add_column(
            header,
            justify="left" if header in ("kind", "merger", "pooling", "kernels", "compiled", "target") else "right",
        )
    for row in rows:
        ok = "" if row["meets_target"] is None else ("[green]yes[/]" if row["meets_target"] else "[red]no[/]")
        table.add_row(
            row["kind"],
            row["merger"] or "",
            row["pooling"] or "",
            row["kernels"] or "",
            row["compiled"] or "",
            _fmt(row["seconds"], ".2f"),
            _fmt(row["process_seconds"], ".1f"),
            _fmt(row["input_seconds"], ".1f"),
            _fmt(row["cpu_seconds"], ".1f"),
            _fmt(row["load_1min"], ".1f"),
            _fmt(row["peak_rss_gb"], ".2f"),
            _fmt(row["over_input_models"], ".2f"),
            _fmt(row["ratio_vs_eager"], ".2f"),
            row["target"] or (row["error"] or ""),
            ok,
        )
    console.print(table)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
