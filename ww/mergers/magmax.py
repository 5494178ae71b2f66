"""MagMax: per element, the task-vector entry of largest magnitude (docs/METHODS.md §2)."""

from __future__ import annotations

import torch

from ..engine.blockops import largest_magnitude
from ..engine.streaming import TaskStream
from ..registry import merger


@merger(
    name="magmax",
    citation="Marczak et al., MagMax: Leveraging Model Merging for Seamless Continual Learning, "
    "ECCV 2024, arXiv 2407.06322",
)
def magmax(tasks: TaskStream) -> torch.Tensor:
    """Per element the τt with the largest |τt|, ties to the later task (its paper uses λ = 0.5).

    The later task wins ties so that the rule is the same one weaving's magmax pooling applies to
    its ordered candidates (docs/METHODS.md §1 and §2 fix it).
    """
    pick = largest_magnitude.for_params(tasks.num_params)
    return tasks.map(lambda tau, block: pick(tau))
