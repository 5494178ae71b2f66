"""The task-vector bank: τ_t = θ_t − θ0 of one (model, setup, seed), stacked once as numpy [T, P].

Built once on the driver and ``ray.put`` once; every trial on a node reads the same shared-memory
buffer zero-copy. Torch tensors are deliberately not sent through Ray: its pickler copies them per
reader, numpy arrays it maps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

import ww
from benchmark import expert_store
from benchmark.plan import ExpertJob
from benchmark.storage import StorageRoot


@dataclass(frozen=True)
class SharedBank:
    """What travels to trials: the flat numpy data plus the layout and task names to rebuild it."""

    data: np.ndarray
    layout: tuple[tuple[str, tuple[int, ...]], ...]
    task_names: tuple[str, ...]

    def to_ww(self) -> ww.TaskVectorBank:
        """A ``ww`` bank viewing the (read-only, shared) numpy buffer without copying it."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            data = torch.from_numpy(self.data)
        return ww.TaskVectorBank.from_flat(data, self.layout, self.task_names)


def build_bank(jobs: list[ExpertJob], theta0_visual: dict[str, torch.Tensor], storage: StorageRoot) -> SharedBank:
    from benchmark.models import check_image_encoder_state

    vectors = {}
    for job in jobs:
        # checksum, architecture, shapes, dtypes, finiteness: refused here, before any trial starts
        state = expert_store.load_expert(job, storage)
        check_image_encoder_state(state, theta0_visual, what=f"expert {job.task} (seed {job.seed}) at {job.path(storage)}")
        vectors[job.task] = ww.task_vector(state, theta0_visual)
    bank = ww.TaskVectorBank.from_state_dicts(vectors)
    return SharedBank(
        data=np.ascontiguousarray(bank.data.numpy()),
        layout=tuple((name, tuple(shape)) for name, shape in bank.layout),
        task_names=tuple(bank.task_names),
    )
