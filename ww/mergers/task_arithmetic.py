"""Task arithmetic: M = Σt τt (docs/METHODS.md §2); the merged model is θ0 + λ·M."""

from __future__ import annotations

import torch

from ..engine.compiling import kernel
from ..engine.streaming import TaskStream
from ..registry import merger


@kernel(alone=False)  # ATen's reduction beats a compiled loop that only sums
def sum_of_tasks(tau: torch.Tensor) -> torch.Tensor:
    """Σt of a block of task vectors: the merger's whole block computation."""
    return tau.sum(dim=0)


@merger(
    name="task_arithmetic",
    citation="Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023, arXiv 2212.04089",
)
def task_arithmetic(tasks: TaskStream) -> torch.Tensor:
    """The sum of the task vectors; its λ (typically 0.3 for 8 tasks) is the scaling Weaving removes."""
    return tasks.map_kernel(sum_of_tasks)
