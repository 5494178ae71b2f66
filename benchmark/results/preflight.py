"""Free space on the storage root, checked against what the plan will write before anything starts.

A disk that fills up halfway through the fine-tunes fails late and leaves the user to guess what to
delete. The plan knows what it will write, so the run refuses at once when the root's disk cannot
hold it:

- per expert still to fine-tune: its image encoder as safetensors, plus the Ray Train checkpoint
  its run keeps for resuming (the encoder and AdamW's two moments: three encoders) unless
  ``finetune.checkpoint_every`` is 0. Checkpoints are deleted once the expert is written (unless
  ``finetune.keep_checkpoints``), so only the experts fine-tuned at once hold one (two while Ray
  Train replaces the previous);
- per bank taking the file route and not yet built: the bank file (T task vectors), in the cache;
- per trial still to run: its Parquet part and Tune's bookkeeping (:data:`BYTES_PER_TRIAL`);
- for toy tasks, the uint8 tensor cache. Real datasets' caches are not estimated (their sizes are
  not known before they are listed); the message says so.

Memory is checked once Ray is up (:func:`check_memory`), for the route each bank takes: the banks
routed through the object store must fit in it and in the driver that builds them; every trial
needs θ0, its merge's outputs and, for domain generalisation, the sub-bank it merges, times the
trials a node runs at once.

Encoder sizes come from θ0 without building the model: the toy's is built (it is tiny), a real
checkpoint's ``visual.*`` tensors are counted from the safetensors header, or from a memory-mapped
``torch.load(weights_only=True)``; when neither works, the checkpoint's file size bounds it.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import ExpertJob, Plan, Trial
from benchmark.spec.schema import DataSpec, FinetuneSpec, ModelSpec, ResourcesSpec

#: Bytes one trial leaves on the root: its Parquet part (a few KB) and Tune's per-trial files.
BYTES_PER_TRIAL = 256 * 1024
#: Experts are held in float32 (open_clip builds the model in float32 before loading a checkpoint).
BYTES_PER_PARAMETER = 4
#: A fine-tune's Ray Train checkpoint: the encoder plus AdamW's exp_avg and exp_avg_sq.
CHECKPOINT_ENCODERS = 3


class InsufficientSpaceError(OSError):
    """The storage root's disk has less free space than the plan needs; says how much of each."""


@dataclass
class DiskEstimate:
    parts: dict[str, int] = field(default_factory=dict)
    not_counted: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        text = " + ".join(f"{what} {human_bytes(n)}" for what, n in self.parts.items() if n) or "nothing"
        return text + (f"; not counted: {', '.join(self.not_counted)}" if self.not_counted else "")


def human_bytes(n: int) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def encoder_bytes(model: ModelSpec) -> int:
    """Bytes of θ0's image encoder as an expert file holds it."""
    if model.is_toy:
        from benchmark.toy import create_toy_model

        return sum(p.numel() for p in create_toy_model(seed=0).visual.state_dict().values()) * BYTES_PER_PARAMETER
    from benchmark.model.pretrained import MissingWeightsError, resolve_pretrained

    try:
        path = resolve_pretrained(model.name, model.pretrained)
    except MissingWeightsError:  # --dry-run on a machine without the weights: the architecture's count
        return _architecture_parameters(model.name) * BYTES_PER_PARAMETER
    try:
        return _visual_parameters(path) * BYTES_PER_PARAMETER
    except Exception:  # an unusual checkpoint layout: its whole size is an upper bound
        return path.stat().st_size


def _architecture_parameters(name: str, everything: bool = False) -> int:
    """Parameter count of an open_clip architecture built on the meta device (no weights, no memory),
    so a plan can be sized before the checkpoint is on the machine."""
    import open_clip
    import torch
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"open_clip knows no architecture {name!r}")
    with torch.device("meta"):
        clip = CLIP(**cfg)
    state = clip.state_dict() if everything else clip.visual.state_dict()
    return sum(t.numel() for t in state.values() if t.is_floating_point())


def model_bytes(model: ModelSpec) -> int:
    """Bytes of the whole θ0 (image and text towers) as a trial holds it in float32."""
    if model.is_toy:
        from benchmark.toy import create_toy_model

        return sum(p.numel() for p in create_toy_model(seed=0).state_dict().values()) * BYTES_PER_PARAMETER
    from benchmark.model.pretrained import MissingWeightsError, resolve_pretrained

    try:
        path = resolve_pretrained(model.name, model.pretrained)
    except MissingWeightsError:
        return _architecture_parameters(model.name, everything=True) * BYTES_PER_PARAMETER
    try:
        return _visual_parameters(path, everything=True) * BYTES_PER_PARAMETER
    except Exception:  # an unusual checkpoint layout: its file size is the best guess
        return path.stat().st_size


def _visual_parameters(path: Path, everything: bool = False) -> int:
    keep = (lambda name: True) if everything else _visual
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            shapes = [handle.get_slice(k).get_shape() for k in handle.keys() if keep(k)]
        count = sum(math.prod(shape) for shape in shapes)
    else:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state = state.get("state_dict", state)
        count = sum(t.numel() for k, t in state.items() if keep(k))
    if not count:
        raise ValueError(f"{path} holds no visual.* tensors")
    return count


def _visual(name: str) -> bool:
    return name.removeprefix("module.").startswith("visual.")


def _toy_cache_bytes(tasks: dict[str, DataSpec]) -> int:
    from benchmark.data import loaders as data
    from benchmark.toy import TOY_IMAGE_SIZE

    image = 3 * TOY_IMAGE_SIZE * TOY_IMAGE_SIZE + 8  # uint8 pixels + an int64 label
    return sum(
        (spec.n_train + spec.n_test) * image
        for task, spec in tasks.items()
        if not data.is_real(data.parse_task(task).dataset)
    )


def expert_concurrency(resources: ResourcesSpec, n_experts: int) -> int:
    """How many fine-tunes can run at once: the CPUs Ray has (or this machine, before Ray starts)
    over one expert's CPUs; every expert when the run will join a cluster of unknown size."""
    import os

    cpus = None
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.cluster_resources().get("CPU")
    except ImportError:  # pragma: no cover
        pass
    if cpus is None and not os.environ.get("RAY_ADDRESS"):
        cpus = os.cpu_count()
    if not cpus:
        return max(1, n_experts)
    per_expert = resources.expert_workers * resources.cpus_per_expert_worker
    return max(1, min(n_experts, int(cpus // per_expert) or 1))


def estimate_disk(
    plan: Plan, experts_todo: list[ExpertJob], trials_todo: list[Trial], bank_files: int = 0
) -> DiskEstimate:
    """What the run will write to the root for the experts and trials still to do.

    ``bank_files``: bytes of the bank files still to build in the cache (file route).
    """
    from benchmark.experts.training import default_checkpoint_every

    estimate = DiskEstimate()
    sizes: dict[str, int] = {}
    experts = kept = transient = 0
    for job in experts_todo:
        model = ModelSpec(**job.model)
        size = sizes.setdefault(job.base_key, encoder_bytes(model))
        experts += size
        finetune = FinetuneSpec(**job.finetune)
        if finetune.checkpoint_every == 0 or (
            finetune.checkpoint_every is None
            and finetune.epochs is None
            and not default_checkpoint_every(finetune.steps, CHECKPOINT_ENCODERS * size)
        ):
            continue  # no checkpoint (runs sized by epochs are assumed to write some)
        if finetune.keep_checkpoints:
            kept += CHECKPOINT_ENCODERS * size
        else:
            transient = max(transient, 2 * CHECKPOINT_ENCODERS * size)
    concurrent = expert_concurrency(plan.spec.resources, len(experts_todo))
    estimate.parts[f"{len(experts_todo)} expert(s)"] = experts
    estimate.parts["their fine-tuning checkpoints"] = kept + concurrent * transient
    estimate.parts["bank files"] = bank_files
    estimate.parts[f"{len(trials_todo)} trial(s)"] = len(trials_todo) * BYTES_PER_TRIAL
    tasks = {job.task: DataSpec(**job.data) for job in experts_todo}
    estimate.parts["toy tensor cache"] = _toy_cache_bytes(tasks)
    if any(_is_real(job.task) for job in experts_todo):
        estimate.not_counted.append("the eval-tensor cache of real datasets (≈150 KB per image at 224 px)")
    return estimate


def _is_real(task: str) -> bool:
    from benchmark.data import loaders as data

    return data.is_real(data.parse_task(task).dataset)


def free_bytes(storage: StorageRoot) -> int | None:
    """Free bytes on the disk holding a local root (its nearest existing folder); None for object stores."""
    if not storage.on_local_disk:
        return None
    folder = Path(storage.base)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(storage: StorageRoot, estimate: DiskEstimate) -> None:
    """Raise :class:`InsufficientSpaceError` naming free and needed bytes when the plan does not fit."""
    free = free_bytes(storage)
    if free is None or free >= estimate.total:
        return
    raise InsufficientSpaceError(
        f"storage root {storage.location} has {human_bytes(free)} free ({free} bytes) but this run needs about "
        f"{human_bytes(estimate.total)} ({estimate.total} bytes: {estimate.describe()}); free up "
        f"{human_bytes(estimate.total - free)} there, or pass --root on a disk with more space"
    )


# --- memory, for the route each bank takes ----------------------------------------------------------


class InsufficientMemoryError(InsufficientSpaceError):
    """The plan's banks or trials do not fit in memory on the route chosen; says the need, the free
    amount and the fix."""


@dataclass(frozen=True)
class BankPlan:
    """One bank of the plan: its size, the route it takes, and what a trial merging it holds."""

    key: str
    label: str
    n_tasks: int
    bytes: int
    encoder_bytes: int
    trial_bytes: int
    route: str
    dg: bool = False


def plan_banks(plan: Plan, trials: list[Trial], store_bytes: int | None) -> list[BankPlan]:
    """The banks ``trials`` merge, sized from θ0, with the route ``resources.bank_route`` gives each."""
    from benchmark.spec.schema import SetupSpec
    from benchmark.trials.banks import choose_route

    resources = plan.spec.resources
    encoders: dict[str, int] = {}
    models: dict[str, int] = {}
    banks: dict[str, BankPlan] = {}
    for trial in trials:
        if trial.bank_key in banks:
            continue
        model = ModelSpec(**trial.model)
        setup = SetupSpec(**trial.setup)
        encoder = encoders.setdefault(trial.base_key, encoder_bytes(model))
        whole = models.setdefault(trial.base_key, model_bytes(model))
        size = len(trial.expert_keys) * encoder
        # θ0 (both towers) + its encoder's copy for merging + the merged vector + θ0 + vector;
        # a DG trial also copies the bank minus the held-out domain
        sub_bank = (len(trial.expert_keys) - 1) * encoder if setup.kind == "dg" else 0
        banks[trial.bank_key] = BankPlan(
            key=trial.bank_key,
            label=f"{model.name} · {setup.name} · seed {trial.seed}",
            n_tasks=len(trial.expert_keys),
            bytes=size,
            encoder_bytes=encoder,
            trial_bytes=whole + 3 * encoder + sub_bank,
            route=choose_route(resources.bank_route, resources.bank_store_fraction, size, store_bytes),
            dg=bool(sub_bank),
        )
    return list(banks.values())


@dataclass(frozen=True)
class NodeMemory:
    """What a Ray node offers trials: CPUs, GPUs and the memory Ray leaves for tasks."""

    cpus: float
    gpus: float
    memory: int


def ray_nodes_memory() -> list[NodeMemory]:
    import ray

    return [
        NodeMemory(
            float(n["Resources"].get("CPU", 0)),
            float(n["Resources"].get("GPU", 0)),
            int(n["Resources"].get("memory", 0)),
        )
        for n in ray.nodes()
        if n.get("Alive") and n["Resources"].get("memory")
    ]


def check_memory(
    banks: list[BankPlan],
    resources: ResourcesSpec,
    n_trials: int,
    *,
    store_bytes: int | None,
    driver_available: int | None,
    nodes: list[NodeMemory],
) -> None:
    """Raise :class:`InsufficientMemoryError` when the banks or the trials cannot fit (see module doc)."""
    fix_route = "set resources.bank_route: file"
    stored = [b for b in banks if b.route == "object_store"]
    total = sum(b.bytes for b in stored)
    if stored and store_bytes is not None and total > store_bytes:
        raise InsufficientMemoryError(
            f"the {len(stored)} bank(s) routed through Ray's object store need {human_bytes(total)} ({total} bytes) "
            f"but it holds {human_bytes(store_bytes)} ({store_bytes} bytes); {fix_route} (memory-mapped from "
            "each node's disk), run fewer tasks or seeds, or use nodes with more memory"
        )
    if stored and driver_available is not None:
        largest = max(stored, key=lambda b: b.bytes)
        need = largest.bytes + 2 * largest.encoder_bytes
        if need > driver_available:
            raise InsufficientMemoryError(
                f"building bank {largest.label} ({largest.n_tasks} tasks) in the driver's memory needs "
                f"{human_bytes(need)} ({need} bytes: the bank, θ0's encoder and one expert) but "
                f"{human_bytes(driver_available)} ({driver_available} bytes) is available; {fix_route} (streamed "
                "to disk one expert at a time), run fewer tasks, or use a head node with more memory"
            )
    if not banks or not n_trials:
        return
    heaviest = max(banks, key=lambda b: b.trial_bytes)
    for node in nodes:
        slots = [n_trials, resources.max_concurrent_trials or n_trials, int(node.cpus // resources.trial_cpus)]
        if resources.trial_gpus > 0:
            slots.append(int(node.gpus // resources.trial_gpus))
        concurrent = min(slots)
        need = concurrent * heaviest.trial_bytes
        if concurrent and need > node.memory:
            fits = node.memory // heaviest.trial_bytes
            fix = (
                f"set resources.max_concurrent_trials: {fits} (or raise resources.trial_cpus)"
                if fits
                else "use nodes with more memory"
            )
            raise InsufficientMemoryError(
                f"{concurrent} trial(s) at once on a node need {human_bytes(need)} ({need} bytes; "
                f"{human_bytes(heaviest.trial_bytes)} each for {heaviest.label}: θ0, the merged weights"
                + (", the bank minus the held-out domain" if heaviest.dg else "")
                + f") but the node leaves {human_bytes(node.memory)} ({node.memory} bytes) to tasks; "
                f"{fix}, run fewer tasks, or use nodes with more memory"
            )


def cache_free_bytes(storage: StorageRoot) -> int | None:
    """Free bytes on the disk of the node-local cache (where bank files go)."""
    folder = Path(storage.cache)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_cache_space(storage: StorageRoot, need: int) -> None:
    """The bank files of a remote root go to the node-local cache: its disk must hold them."""
    if storage.cache_dir is None or not need:
        return
    free = cache_free_bytes(storage)
    if free is None or free >= need:
        return
    raise InsufficientSpaceError(
        f"the node-local cache {storage.cache} has {human_bytes(free)} free ({free} bytes) but this run's bank "
        f"files need {human_bytes(need)} ({need} bytes); point WW_CACHE_DIR at a disk with more space, set "
        "resources.bank_route: object_store for small banks, or run fewer tasks"
    )
