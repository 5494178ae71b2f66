"""Weight averaging (a model soup): M = (1/T) Σt τt (METHODS §2)."""

from __future__ import annotations

import torch

from ..registry import merger
from ..streaming import TaskStream


@merger(
    name="weight_averaging",
    citation="Wortsman et al., Model soups, ICML 2022, arXiv 2203.05482",
)
def weight_averaging(tasks: TaskStream) -> torch.Tensor:
    """The mean task vector; θ0 + M is the uniform soup of the experts."""
    return tasks.map(lambda tau, block: tau.mean(dim=0))
