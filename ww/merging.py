"""`merge`: one base merger applied to task vectors, M at λ = 1 (docs/METHODS.md §2)."""

from __future__ import annotations

import torch

from . import kernels
from .bank import as_tasks
from .registry import get_merger


def merge(name: str, task_vectors, **hparams: object) -> dict[str, torch.Tensor]:
    """M = f_merge(τ1..τT) at λ = 1, as a state dict in the task vectors' dtype.

    ``task_vectors``: a list of state dicts, a dict task name -> state dict, or a `TaskVectorBank`.
    ``hparams`` are the merger's hyper-parameters (see ``ww.MERGERS[name].defaults``); unknown names
    and out-of-range values raise ValueError before any work; NaN/Inf entries raise ValueError
    naming the task and tensor. The returned tensors are views of one flat tensor (they share
    storage); the inputs are never modified. A bank from `ww.open_bank` is merged out-of-core.

    Memory: state dicts are read in place, block by block (no stacked copy), so the merge holds
    the inputs, the output (one model) and a few blocks. Whether kernels compile: `ww.kernels`.
    """
    record = get_merger(name)
    record.resolve(hparams)
    tasks = as_tasks(task_vectors)
    with kernels.job(f"merge-{name}-T{len(tasks)}", len(tasks) * tasks.num_params):
        merged = record.run(tasks.stream(), hparams)
    return tasks.unflatten(merged.to(tasks.dtype))
