"""``run_bench.py rehearse``: the paper's pipeline at a real model's size, on one machine, measured.

No real weights or datasets are needed: θ0 is the real open_clip architecture with a seeded random
initialisation (open_clip's key names, safetensors, loaded through the ``pretrained: /path`` route),
and every dataset is a fake in its real on-disk layout at a realistic image size
(``benchmark.data.fake``). The spec is the paper's (``benchmark/spec/presets/paper_<setup>.yaml``) with
the same mergers, poolings and variants, the real text tower, tokenizer and preprocessing; only
sizes are cut: a few fine-tuning steps, a few dozen test images per task, one seed, resources that
fit this machine, and — below eight MTL tasks — the tasks with the fewest classes. The unchanged
``pipeline.run_spec`` runs it, so the rehearsal writes the same Parquet results and leaderboard as
a real run.

What it adds is a meter: one row per stage (θ0 + heads + tensors, each expert, the banks, each
trial, the report) with wall seconds, the peak resident memory of the driver and of the Ray worker
processes (Ray Train workers, trial actors), the object store's bytes in use and the bytes the
stage left in the storage root; printed with rich and written as Parquet next to the root.
Worker memory is sampled from ``/proc`` (the rehearsal starts its own local Ray, whose workers
descend from this process), so it is a Linux, one-machine tool.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from benchmark.results.preflight import human_bytes

MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14")
SETUPS = ("mtl", "cil", "dg")
SPEC_FILES = {"mtl": "paper_mtl.yaml", "cil": "paper_cil.yaml", "dg": "paper_dg.yaml"}
#: Typical image sizes (width, height) of the real datasets written as folders of image files;
#: the formats torchvision reads (MNIST, SVHN, CIFAR, ...) have their fixed native sizes.
REAL_SIZES = {
    "SUN397": (500, 375),
    "Cars": (700, 470),
    "RESISC45": (256, 256),
    "EuroSAT": (64, 64),
    "GTSRB": (50, 50),
    "DTD": (640, 480),
    "Flowers102": (500, 670),
    "OxfordIIITPet": (500, 375),
    "Food101": (512, 512),
    "RenderedSST2": (448, 448),
    "ImageNet-R": (500, 400),
    "DomainNet": (300, 300),
}
#: The layout each fake is written in: the dataset's official release where the registry reads it.
LAYOUTS = {"SUN397": "partitions", "EuroSAT": "torchvision", "DTD": "torchvision"}
#: Fake writers that can hold fewer test images than classes (``test_images``).
CAPPED_TEST = {
    "SUN397",
    "Cars",
    "RESISC45",
    "GTSRB",
    "DTD",
    "CIFAR100",
    "Food101",
    "Flowers102",
    "OxfordIIITPet",
    "MNIST",
    "SVHN",
    "FashionMNIST",
    "KMNIST",
    "EMNIST",
}
STAGE_TABLE = "rehearsal-stages.parquet"


@dataclass(frozen=True)
class Sizes:
    """What a rehearsal cuts: everything else is the paper's spec."""

    steps: int = 2
    batch_size: int = 8
    test_images: int = 32


# ---------------------------------------------------------------------------------------------
# Inputs: θ0, fake datasets, the derived spec


def write_theta0(model: str, path: Path, seed: int = 0) -> Path:
    """A seeded random ``model`` (real architecture, open_clip key names) as safetensors."""
    import logging

    import open_clip
    import torch
    from safetensors.torch import save_file

    from benchmark.results.storage import atomic_write

    if path.exists():
        return path
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: intended
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = open_clip.create_model(model, pretrained=None)
    finally:
        logging.disable(previous)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(tmp))
    return path


def _mtl_tasks(n: int) -> list[str]:
    from benchmark.data import loaders as data
    from benchmark.data.catalog import MTL8, MTL20

    if not 2 <= n <= len(MTL20):
        raise ValueError(
            f"--tasks {n}: an MTL rehearsal merges 2 to {len(MTL20)} tasks (8 = the paper's, "
            "up to 20 = the 20-task extension)"
        )
    if n > len(MTL8):
        return list(MTL20[:n])
    # fewest classes first (heads and tensors stay small), in the paper's order among equals
    return sorted(sorted(MTL8, key=lambda t: (data.n_classes(t), MTL8.index(t)))[:n], key=MTL8.index)


def rehearsal_spec(
    model: str,
    setup: str,
    n_tasks: int | None,
    theta0: Path,
    sizes: Sizes,
    bank_route: str | None = None,
    grid: dict | None = None,
    cpus: int | None = None,
) -> dict:
    """The paper's spec for ``setup`` reduced to ``model`` (at ``theta0``) and the rehearsal's sizes.

    ``grid`` may replace the paper's ``mergers``, ``poolings`` or ``variants`` (a quicker rehearsal).
    Every fine-tune, the preparation and every trial get ``cpus`` (default: this machine's, at most
    8): one runs at a time, so each stage's memory is that of one process at real size.
    """
    from benchmark.spec.schema import PRESETS, ResourcesSpec

    paper = yaml.safe_load((PRESETS / SPEC_FILES[setup]).read_text())
    setups = []
    for entry in paper["setups"]:
        entry = dict(entry)
        if setup == "mtl" and n_tasks is not None:
            entry["tasks"] = _mtl_tasks(n_tasks)
        elif setup == "cil" and n_tasks is not None:
            if n_tasks < 2 or 100 % n_tasks:
                raise ValueError(
                    f"--tasks {n_tasks}: CIFAR100's 100 classes split into 2, 4, 5, 10, 20, 25 or 50 "
                    "class-incremental tasks; choose one of those"
                )
            entry["n_splits"] = n_tasks
        elif setup == "dg" and n_tasks is not None:
            if n_tasks < 3:
                raise ValueError(f"--tasks {n_tasks}: leave-one-domain-out needs at least 3 domains")
            entry["domains"] = entry["domains"][:n_tasks]
        recipe = {k: v for k, v in entry["finetune"].items() if k != "epochs"}
        entry["finetune"] = {**recipe, "steps": sizes.steps, "batch_size": sizes.batch_size}
        setups.append(entry)
    cpus = max(1, min(cpus or os.cpu_count() or 1, 8))
    resources = {
        "expert_workers": 1,
        "cpus_per_expert_worker": cpus,
        "gpus_per_expert_worker": 0,
        "prepare_cpus": cpus,
        "trial_cpus": cpus,
        "trial_gpus": 0,
    }
    if bank_route is not None:
        if "bank_route" not in ResourcesSpec.model_fields:
            raise ValueError(
                "--bank-route: this version of the harness has no bank routes (resources.bank_route); drop the option"
            )
        resources["bank_route"] = bank_route
    return {
        "name": f"rehearse-{setup}-{model}-{len(_expert_tasks(setups))}",
        "models": [{"name": model, "pretrained": str(theta0)}],
        "setups": setups,
        "mergers": (grid or {}).get("mergers") or paper["mergers"],
        "poolings": (grid or {}).get("poolings") or paper["poolings"],
        "variants": (grid or {}).get("variants") or paper["variants"],
        "fixed_lambda": paper["fixed_lambda"],
        "seeds": paper["seeds"][:1],
        "resources": resources,
    }


def _expert_tasks(setups: list[dict]) -> list[str]:
    from benchmark.spec.schema import SetupSpec

    return [t for s in setups for t in SetupSpec(**s).expert_tasks()]


def datasets_of(spec: dict) -> dict[str, set[str]]:
    """Real datasets the spec reads → the domains it needs (empty for single-domain ones)."""
    from benchmark.data import loaders as data
    from benchmark.spec.schema import SetupSpec

    needed: dict[str, set[str]] = {}
    for entry in spec["setups"]:
        setup = SetupSpec(**entry)
        for task in [*setup.expert_tasks(), *(e.task for e in setup.evaluations())]:
            ref = data.parse_task(task)
            needed.setdefault(ref.dataset, set()).update([ref.domain] if ref.domain else [])
    return needed


def write_fake_data(needed: dict[str, set[str]], data_root: Path, sizes: Sizes) -> None:
    """Each dataset once, in its real layout, at its real image size, with few test images."""
    from benchmark.data import fake
    from benchmark.data import loaders as data

    for dataset, domains in sorted(needed.items()):
        done = data_root / f".{dataset}.written"
        if done.exists():
            continue
        kwargs: dict[str, Any] = {}
        n_classes = data.n_classes(dataset)
        if dataset in CAPPED_TEST:
            kwargs["test_images"] = sizes.test_images
        elif dataset not in ("ImageNet-R", "DomainNet"):  # per class per split, as many as fit the test budget
            kwargs["per_class"] = max(1, sizes.test_images // n_classes)
        if dataset in REAL_SIZES:
            kwargs["size"] = REAL_SIZES[dataset]
        if dataset == "ImageNet-R":
            kwargs["renditions"] = tuple(sorted(domains))
        if dataset == "DomainNet":
            kwargs["domains"] = tuple(sorted(domains))
        fake.write_fake(dataset, data_root, LAYOUTS.get(dataset), **kwargs)
        done.write_text("")


# ---------------------------------------------------------------------------------------------
# The meter


def _status(pid: int | str, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _descendants(root_pid: int) -> tuple[dict[int, str], dict[int, float]]:
    """Ray worker processes (``ray::<what>`` titles, idle ones left out) descending from ``root_pid``,
    and the CPU seconds (user + system) of ``root_pid`` and every process descending from it."""
    parents, titles, cpu = {}, {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
            fields = text[text.rindex(")") + 2 :].split()
            parents[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                head = cmd.read(96)
            if head.startswith(b"ray::") and not head.startswith(b"ray::IDLE"):
                titles[int(entry)] = head.split(b"\0")[0].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    mine = {root_pid}
    for pid in parents:
        chain, p = [], pid
        while p and p not in mine and p in parents and len(chain) < 64:
            chain.append(p)
            p = parents[p]
        if p in mine:
            mine.update(chain)
    return {pid: t for pid, t in titles.items() if pid in mine}, {pid: cpu[pid] for pid in mine if pid in cpu}


def object_store_bytes(pids) -> int | None:
    """Bytes allocated in the object store of the raylet among ``pids`` (None: none found).

    Ray's store is one shared-memory file mapped by the raylet; its allocated blocks are the pages
    objects have occupied (the allocator keeps freed pages), so this is a high-water mark. Read
    from ``/proc`` because Ray's own memory API needs the gRPC extra, which a minimal install lacks.
    """
    found = None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                if os.path.basename(cmd.read(256).split(b"\0")[0]) != b"raylet":
                    continue
            with open(f"/proc/{pid}/maps") as maps:
                ranges = [line.split()[0] for line in maps if "plasma" in line]
            for span in ranges:
                found = max(found or 0, os.stat(f"/proc/{pid}/map_files/{span}").st_blocks * 512)
        except OSError:
            continue
    return found


def tree_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class Sample:
    t: float
    driver: int
    workers: dict[int, int]
    store: int | None
    cpu: dict[int, float]


@dataclass
class Meter:
    """Samples the driver's and the Ray workers' resident memory and the object store in a thread."""

    root: Path
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    marks: list[tuple[str, float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ww-rehearse-meter", daemon=True)
        self._pid = os.getpid()

    def start(self) -> "Meter":
        self.mark("start")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self, with_store: bool) -> None:
        titles, cpu = _descendants(self._pid)
        workers = {pid: _status(pid, "VmRSS") or 0 for pid in titles}
        self.samples.append(
            Sample(
                time.time(),
                _status(self._pid, "VmRSS") or 0,
                workers,
                object_store_bytes(cpu) if with_store else None,
                cpu,
            )
        )

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            self._sample(with_store=n % 2 == 0)
            n += 1

    def mark(self, name: str) -> None:
        """The stage ``name`` ends now (the next one starts)."""
        self._sample(with_store=True)
        self.marks.append((name, time.time(), tree_bytes(self.root) if self.root.exists() else 0))

    def window(self, t0: float, t1: float, pid: int | None = None) -> dict[str, int | None]:
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        if pid is not None:
            values = [s.workers[pid] for s in inside if pid in s.workers]
            return {"worker_peak_rss_bytes": max(values) if values else None}
        stores = [s.store for s in inside if s.store is not None]
        before = [s for s in self.samples if s.t < t0][-1:]
        start_cpu = before[0].cpu if before else {}
        last_cpu: dict[int, float] = {}
        for s in inside:
            last_cpu.update(s.cpu)
        workers = [max(s.workers.values()) for s in inside if s.workers]
        return {
            "driver_peak_rss_bytes": max((s.driver for s in inside), default=None),
            "worker_peak_rss_bytes": max(workers) if workers else None,
            "workers_total_peak_rss_bytes": max((sum(s.workers.values()) for s in inside), default=None),
            "object_store_peak_bytes": max(stores) if stores else None,
            "cpu_seconds": sum(v - start_cpu.get(pid, 0.0) for pid, v in last_cpu.items()),
        }

    def stages(self) -> list[tuple[str, float, float, int]]:
        """(stage, start, end, bytes added to the root) between consecutive marks."""
        return [(name, t0, t1, b1 - b0) for (_, t0, b0), (name, t1, b1) in zip(self.marks, self.marks[1:])]


# ---------------------------------------------------------------------------------------------
# The stage table

COLUMNS = (
    "stage",
    "item",
    "seconds",
    "cpu_seconds",
    "driver_peak_rss_bytes",
    "worker_peak_rss_bytes",
    "workers_total_peak_rss_bytes",
    "object_store_peak_bytes",
    "bytes_written",
    "detail",
)


def stage_rows(meter: Meter, summary, storage) -> list[dict]:
    """One row per stage, plus one per expert and per trial under their stage."""
    from benchmark.experts import store as expert_store
    from benchmark.results import store as results
    from benchmark.results.storage import safe_name
    from benchmark.spec.schema import SetupSpec

    labels = {
        "fakes": "θ0 file + fake datasets (outside the root)",
        "ray_init": "Ray start + preflight",
        "prepare": "θ0 + heads + tensors",
        "experts": "experts (Ray Train)",
        "banks": "banks",
        "grid": "trials (Ray Tune)",
        "report": "report (Parquet → leaderboard)",
    }
    rows = []
    for name, t0, t1, written in meter.stages():
        row = {
            "stage": name,
            "item": labels.get(name, name),
            "seconds": t1 - t0,
            "bytes_written": written,
            "detail": "",
            **meter.window(t0, t1),
        }
        if name == "prepare":
            peaks = [p.get("peak_rss_bytes") for p in summary.prepared.values() if p.get("peak_rss_bytes")]
            if peaks:  # the prepare task's own figure (ru_maxrss), in case sampling missed its peak
                row["worker_peak_rss_bytes"] = max(peaks + [row["worker_peak_rss_bytes"] or 0])
        rows.append(row)
        if name == "experts":
            for outcome in summary.expert_outcomes:
                job = outcome.job
                run_dir = storage.runs / "experts" / f"expert-{safe_name(job.task)}-{job.key}"
                detail = outcome.detail if isinstance(outcome.detail, dict) else {}
                manifest = expert_store.read_manifest(job, storage) or {}
                checkpoints = (manifest.get("metrics") or {}).get("checkpoint_bytes")
                if checkpoints is None:  # Ray Train checkpoints left under the run's folder
                    checkpoints = tree_bytes(Path(run_dir)) if Path(run_dir).exists() else 0
                expert_bytes = int(manifest.get("bytes", 0))
                outcome_text = (
                    f"test acc {detail['test_accuracy']:.3f}"
                    if "test_accuracy" in detail
                    else ""
                    if outcome.ok
                    else f"FAILED: {outcome.detail}"
                )
                rows.append(
                    {
                        "stage": "expert",
                        "item": f"{job.task} (seed {job.seed})",
                        "seconds": detail.get("seconds"),
                        "driver_peak_rss_bytes": None,
                        "worker_peak_rss_bytes": detail.get("peak_rss_bytes"),
                        "workers_total_peak_rss_bytes": None,
                        "object_store_peak_bytes": None,
                        "bytes_written": expert_bytes + int(checkpoints),
                        "detail": f"{outcome_text}; expert {human_bytes(expert_bytes)}, "
                        f"checkpoints {human_bytes(int(checkpoints))}",
                    }
                )
        if name == "grid":
            by_key = {t.key: t for t in summary.plan.trials}
            for metrics in summary.trial_metrics:
                trial = by_key.get(metrics.get("trial_key", ""))
                pid, start, end = metrics.get("worker_pid"), metrics.get("started_at"), metrics.get("ended_at")
                peak = meter.window(start, end, pid)["worker_peak_rss_bytes"] if pid and start else None

                def figure(name: str, metrics: dict = metrics) -> float:
                    return float(metrics.get(name, float("nan")))

                part = None
                if trial is not None:
                    part = results.part_path(storage, trial.model["name"], SetupSpec(**trial.setup).name, trial.key)
                rows.append(
                    {
                        "stage": "trial",
                        "item": _trial_label(trial) if trial else "?",
                        "seconds": metrics.get("trial_seconds"),
                        "driver_peak_rss_bytes": None,
                        "worker_peak_rss_bytes": peak,
                        "workers_total_peak_rss_bytes": None,
                        "object_store_peak_bytes": None,
                        "bytes_written": Path(part).stat().st_size if part and Path(part).exists() else None,
                        "detail": f"{metrics.get('status', '?')}; mean acc {figure('mean_accuracy'):.3f}; "
                        f"merge {figure('merge_seconds'):.1f} s, eval {figure('eval_seconds'):.1f} s",
                    }
                )
    return rows


def print_stage_table(rows: list[dict], console: Console, title: str) -> None:
    table = Table(title=title)
    for col, head in (
        ("stage", "stage"),
        ("item", "what"),
        ("seconds", "wall s"),
        ("cpu_seconds", "CPU s"),
        ("driver_peak_rss_bytes", "driver peak RSS"),
        ("worker_peak_rss_bytes", "worker peak RSS"),
        ("workers_total_peak_rss_bytes", "all workers peak"),
        ("object_store_peak_bytes", "object store"),
        ("bytes_written", "written to root"),
        ("detail", "detail"),
    ):
        table.add_column(head, justify="left" if col in ("stage", "item", "detail") else "right")
    for row in rows:
        cells = []
        for col in (
            "stage",
            "item",
            "seconds",
            "cpu_seconds",
            "driver_peak_rss_bytes",
            "worker_peak_rss_bytes",
            "workers_total_peak_rss_bytes",
            "object_store_peak_bytes",
            "bytes_written",
            "detail",
        ):
            value = row.get(col)
            if value is None:
                cells.append("–")
            elif col in ("seconds", "cpu_seconds"):
                cells.append(f"{value:.1f}")
            elif col.endswith("bytes") or col == "bytes_written":
                cells.append(human_bytes(int(value)))
            else:
                cells.append(str(value))
        table.add_row(*cells, style="bold" if row["stage"] not in ("expert", "trial") else None)
    console.print(table)


def write_stage_table(rows: list[dict], path: Path, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmark.results.storage import atomic_write

    schema = pa.schema(
        [
            ("stage", pa.string()),
            ("item", pa.string()),
            ("seconds", pa.float64()),
            ("cpu_seconds", pa.float64()),
            *[(c, pa.int64()) for c in COLUMNS if c.endswith("bytes") or c == "bytes_written"],
            ("detail", pa.string()),
        ]
    )
    columns = {name: [r.get(name) for r in rows] for name in schema.names}
    for name in schema.names:
        if schema.field(name).type == pa.int64():
            columns[name] = [None if v is None else int(v) for v in columns[name]]
    table = pa.table(columns, schema=schema).replace_schema_metadata({"rehearsal": json.dumps(meta)})
    with atomic_write(path) as tmp:
        pq.write_table(table, str(tmp))


# ---------------------------------------------------------------------------------------------
# The command


@dataclass
class Rehearsal:
    rows: list[dict]
    summary: Any
    storage: Any
    spec: Any
    table_path: Path


def rehearse(
    model: str = "ViT-B-32",
    setup: str = "mtl",
    n_tasks: int | None = None,
    root: str | Path = "ww-rehearse",
    keep: bool = False,
    sizes: Sizes = Sizes(),
    bank_route: str | None = None,
    grid: dict | None = None,
    data_root: str | Path | None = None,
    console: Console | None = None,
) -> Rehearsal:
    """Write θ0 and the fakes under ``root``, run the derived spec, measure every stage.

    ``root`` holds ``theta0/``, ``data/`` (the fakes, unless ``data_root`` puts them elsewhere),
    ``root/`` (the storage root the pipeline writes) and the stage table. Unless ``keep``, the bulky
    parts (θ0, fakes, caches, experts, Ray runs) are removed at the end; the Parquet results and
    the stage table stay.
    """
    from benchmark.data import loaders as data
    from benchmark.pipeline import run_spec
    from benchmark.report.leaderboard import render_leaderboard
    from benchmark.results.storage import StorageRoot
    from benchmark.results.store import read_results
    from benchmark.spec.schema import parse_spec

    if model not in MODELS:
        raise ValueError(f"--model {model!r}: rehearsals cover the paper's models {list(MODELS)}")
    if setup not in SETUPS:
        raise ValueError(f"--setup {setup!r}: choose one of {list(SETUPS)}")
    console = console or Console()
    scratch = Path(root).expanduser().resolve()
    table_path = scratch / STAGE_TABLE
    if table_path.exists():
        raise ValueError(
            f"{scratch} already holds a finished rehearsal ({table_path.name}); a second run there would "
            "measure cached stages: remove it or pass another --root"
        )
    theta0 = scratch / "theta0" / f"{model}-seed0.safetensors"
    data_root = Path(data_root).expanduser().resolve() if data_root else scratch / "data"
    check_workers_see(data_root)
    storage = StorageRoot.at(scratch / "root")
    import ray

    # a Ray already running (a notebook, the test session) may count more CPUs than the machine has
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else None
    spec_dict = rehearsal_spec(model, setup, n_tasks, theta0, sizes, bank_route, grid, cpus)
    spec = parse_spec(spec_dict, f"rehearsal of {SPEC_FILES[setup]}")

    meter = Meter(Path(storage.root))
    meter.start()
    with console.status(f"writing θ0 ({model}, random init) and fake datasets at real resolution under {scratch}"):
        write_theta0(model, theta0)
        data_root.mkdir(parents=True, exist_ok=True)
        write_fake_data(datasets_of(spec_dict), data_root, sizes)
    meter.mark("fakes")
    console.print(
        f"θ0 {theta0} ({human_bytes(theta0.stat().st_size)}), "
        f"fake data {human_bytes(tree_bytes(data_root))} under {data_root}",
        highlight=False,
    )
    previous_root = os.environ.get(data.DATA_ROOT_ENV)
    os.environ[data.DATA_ROOT_ENV] = str(data_root)  # Ray workers started from here inherit it
    try:
        summary = run_spec(spec, storage, console=console, on_stage=meter.mark)
        console.rule("leaderboard")
        render_leaderboard(read_results(storage), console)
        meter.mark("report")
    finally:
        meter.stop()
        if previous_root is None:
            os.environ.pop(data.DATA_ROOT_ENV, None)
        else:
            os.environ[data.DATA_ROOT_ENV] = previous_root
    rows = stage_rows(meter, summary, storage)
    title = (
        f"Rehearsal: {model} · {setup} · {len(_expert_tasks(spec_dict['setups']))} expert(s) · "
        f"{len(summary.plan.trials)} trial(s) · {sizes.steps} step(s) × batch {sizes.batch_size}"
    )
    print_stage_table(rows, console, title)
    meta = {
        "model": model,
        "setup": setup,
        "tasks": n_tasks,
        "sizes": sizes.__dict__,
        "spec": spec_dict,
        "cpus": os.cpu_count(),
        "finished_at": time.time(),
    }
    write_stage_table(rows, table_path, meta)
    console.print(f"stage table: {table_path}; results: {storage.results}", highlight=False)
    if not keep:
        for bulky in (scratch / "theta0", data_root, Path(storage.cache), Path(storage.experts), Path(storage.runs)):
            shutil.rmtree(bulky, ignore_errors=True)
        console.print(
            f"removed θ0, fake data, caches, experts and Ray runs under {scratch} (--keep keeps them)", highlight=False
        )
    return Rehearsal(rows, summary, storage, spec, table_path)


def check_workers_see(data_root: Path) -> None:
    """Refuse a Ray started before the rehearsal whose workers read data from elsewhere.

    Local Ray workers take their environment from the moment Ray started, so ``WW_DATA_ROOT`` set
    afterwards would not reach them and they would look for the fakes under the wrong root.
    """
    import ray

    from benchmark.data import loaders as data

    if not ray.is_initialized():
        return
    seen = ray.get(ray.remote(num_cpus=0)(_data_root_env).remote())
    if seen is None or Path(seen).expanduser().resolve() != data_root:
        raise ValueError(
            f"Ray was started before this rehearsal and its workers read data from "
            f"{seen or '~/data'}, not {data_root}; run the rehearsal in a fresh process, or set "
            f"{data.DATA_ROOT_ENV}={data_root} before ray.init"
        )


def _data_root_env() -> str | None:
    from benchmark.data import loaders as data

    return os.environ.get(data.DATA_ROOT_ENV)


def _trial_label(trial) -> str:
    variant = "" if trial.pooling in ("none", "oracle") else (" A*" if trial.collaborative else " A")
    return f"{trial.merger} · {trial.pooling}{variant}"
