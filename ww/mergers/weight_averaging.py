"""Weight averaging (a model soup): M = (1/T) Σt τt (METHODS §2)."""

from __future__ import annotations

import torch

from ..layout import Layout
from ..registry import merger


@merger(
    name="weight_averaging",
    citation="Wortsman et al., Model soups, ICML 2022, arXiv 2203.05482",
)
def weight_averaging(tau: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The mean task vector; θ0 + M is the uniform soup of the experts."""
    return tau.mean(dim=0)
