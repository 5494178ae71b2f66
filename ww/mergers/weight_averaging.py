"""Weight averaging (a model soup): M = (1/T) Σt τt (docs/METHODS.md §2)."""

from __future__ import annotations

import torch

from ..engine.compiling import kernel
from ..engine.streaming import TaskStream
from ..registry import merger


@kernel(alone=False)  # ATen's reduction beats a compiled loop that only sums
def mean_of_tasks(tau: torch.Tensor) -> torch.Tensor:
    """The mean over tasks of a block of task vectors: the merger's whole block computation."""
    return tau.mean(dim=0)


@merger(
    name="weight_averaging",
    citation="Wortsman et al., Model soups, ICML 2022, arXiv 2203.05482",
)
def weight_averaging(tasks: TaskStream) -> torch.Tensor:
    """The mean task vector; θ0 + M is the uniform soup of the experts."""
    return tasks.map_kernel(mean_of_tasks)
