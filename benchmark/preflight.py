"""Free space on the storage root, checked against what the plan will write before anything starts.

A disk that fills up halfway through the fine-tunes fails late and leaves the user to guess what to
delete. The plan knows what it will write, so the run refuses at once when the root's disk cannot
hold it:

- per expert still to fine-tune: its image encoder as safetensors, plus the Ray Train checkpoint
  its run keeps for resuming (the encoder and AdamW's two moments: three encoders) unless
  ``finetune.checkpoint_every`` is 0;
- per trial still to run: its Parquet part and Tune's bookkeeping (:data:`BYTES_PER_TRIAL`);
- for toy tasks, the uint8 tensor cache. Real datasets' caches are not estimated (their sizes are
  not known before they are listed); the message says so.

Encoder sizes come from θ0 without building the model: the toy's is built (it is tiny), a real
checkpoint's ``visual.*`` tensors are counted from the safetensors header, or from a memory-mapped
``torch.load(weights_only=True)``; when neither works, the checkpoint's file size bounds it.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.plan import ExpertJob, Plan, Trial
from benchmark.specs import DataSpec, FinetuneSpec, ModelSpec
from benchmark.storage import StorageRoot

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
    from benchmark.models import resolve_pretrained

    path = resolve_pretrained(model.name, model.pretrained)
    try:
        return _visual_parameters(path) * BYTES_PER_PARAMETER
    except Exception:  # an unusual checkpoint layout: its whole size is an upper bound
        return path.stat().st_size


def _visual_parameters(path: Path) -> int:
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            shapes = [handle.get_slice(k).get_shape() for k in handle.keys() if _visual(k)]
        count = sum(math.prod(shape) for shape in shapes)
    else:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state = state.get("state_dict", state)
        count = sum(t.numel() for k, t in state.items() if _visual(k))
    if not count:
        raise ValueError(f"{path} holds no visual.* tensors")
    return count


def _visual(name: str) -> bool:
    return name.removeprefix("module.").startswith("visual.")


def _toy_cache_bytes(tasks: dict[str, DataSpec]) -> int:
    from benchmark import data
    from benchmark.toy import TOY_IMAGE_SIZE

    image = 3 * TOY_IMAGE_SIZE * TOY_IMAGE_SIZE + 8  # uint8 pixels + an int64 label
    return sum((spec.n_train + spec.n_test) * image for task, spec in tasks.items()
               if not data.is_real(data.parse_task(task).dataset))


def estimate_disk(plan: Plan, experts_todo: list[ExpertJob], trials_todo: list[Trial]) -> DiskEstimate:
    """What the run will write to the root for the experts and trials still to do."""
    estimate = DiskEstimate()
    sizes: dict[str, int] = {}
    experts = checkpoints = 0
    for job in experts_todo:
        model = ModelSpec(**job.model)
        size = sizes.setdefault(job.base_key, encoder_bytes(model))
        experts += size
        if FinetuneSpec(**job.finetune).checkpoint_every != 0:
            checkpoints += CHECKPOINT_ENCODERS * size
    estimate.parts[f"{len(experts_todo)} expert(s)"] = experts
    estimate.parts["their fine-tuning checkpoints"] = checkpoints
    estimate.parts[f"{len(trials_todo)} trial(s)"] = len(trials_todo) * BYTES_PER_TRIAL
    tasks = {job.task: DataSpec(**job.data) for job in experts_todo}
    estimate.parts["toy tensor cache"] = _toy_cache_bytes(tasks)
    if any(_is_real(job.task) for job in experts_todo):
        estimate.not_counted.append("the eval-tensor cache of real datasets (≈150 KB per image at 224 px)")
    return estimate


def _is_real(task: str) -> bool:
    from benchmark import data

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
