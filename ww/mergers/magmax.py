"""MagMax: per element, the task-vector entry of largest magnitude (METHODS §2)."""

from __future__ import annotations

import torch

from ..layout import Layout
from ..registry import merger


def keep_largest_magnitude(candidates) -> torch.Tensor:
    """Element-wise the candidate with the largest |value|; ties go to the later candidate.

    ``candidates`` is an iterable of equally shaped tensors, consumed one at a time so only two
    are alive at once (the running winner and the challenger). Ties go to the later candidate
    because the challenger wins on ``>=`` (METHODS §1 and §2 fix this rule).
    """
    winner = None
    for candidate in candidates:
        if winner is None:
            winner = candidate
        else:
            winner = torch.where(candidate.abs() >= winner.abs(), candidate, winner)
    if winner is None:
        raise ValueError("magmax needs at least one candidate")
    return winner


@merger(
    name="magmax",
    citation="Marczak et al., MagMax: Leveraging Model Merging for Seamless Continual Learning, "
    "ECCV 2024, arXiv 2407.06322",
)
def magmax(tau: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Per element the τt with the largest |τt|, ties to the later task (its paper uses λ = 0.5)."""
    return keep_largest_magnitude(iter(tau))
