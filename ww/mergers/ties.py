"""TIES-merging: trim, elect sign, disjoint mean (METHODS §2).

Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023,
arXiv 2306.01708. Every step loops over tasks with ``[P]`` temporaries, so memory beyond the input
stays O(P) however many tasks are merged.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..hyperparams import Interval
from ..layout import Layout
from ..registry import merger


def keep_count(k: float, num_params: int) -> int:
    """How many entries "the top k fraction" of ``num_params`` is: ⌈k·P⌉, at least 1.

    k is read as the decimal it was written as (``Fraction(repr(k))``), so 0.1 of 30 entries is 3,
    not the 4 that ⌈0.1·30⌉ gives in binary floating point.
    """
    return max(1, math.ceil(Fraction(repr(float(k))) * num_params))


def magnitude_threshold(row: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count``-th largest |row| (a 0-D tensor), found by selection, not by sorting.

    Keeping ``|row| >= threshold`` keeps at least ``count`` entries: entries equal to the threshold
    are all kept, so ties can keep more (METHODS §2: "entries equal to the threshold are kept").
    """
    magnitudes = row.abs()
    return torch.kthvalue(magnitudes, magnitudes.numel() - count + 1).values


def trim(row: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``row`` with every entry of magnitude below ``threshold`` set to zero (a new tensor)."""
    return torch.where(row.abs() >= threshold, row, torch.zeros((), dtype=row.dtype, device=row.device))


def elect_sign(trimmed_rows) -> torch.Tensor:
    """γ = sign(Σt trimmed τt); where the sum is exactly 0, the majority sign.

    The majority sign of an element is sign(#positive − #negative) over the tasks' trimmed entries
    at that element. If that count is tied too, γ = 0: no task agrees and the disjoint mean is 0
    there. Choosing 0 rather than +1 keeps TIES odd, ties(−τ) = −ties(τ).
    (The TIES reference code breaks zero sums with one global majority over all elements instead;
    with float weights an exact zero sum of non-zero entries is rare, so the two rarely differ.)
    """
    total = None
    votes = None
    for trimmed in trimmed_rows:
        signs = torch.sign(trimmed)
        total = trimmed.clone() if total is None else total.add_(trimmed)
        votes = signs if votes is None else votes.add_(signs)
    gamma = torch.sign(total)
    return torch.where(gamma == 0, torch.sign(votes), gamma)


def disjoint_mean(trimmed_rows, gamma: torch.Tensor) -> torch.Tensor:
    """Per element, the mean over tasks whose trimmed entry is non-zero and has sign γ; 0 if none."""
    total = torch.zeros_like(gamma)
    count = torch.zeros_like(gamma)
    for trimmed in trimmed_rows:
        agrees = (trimmed != 0) & (torch.sign(trimmed) == gamma)
        total.add_(torch.where(agrees, trimmed, torch.zeros_like(trimmed)))
        count.add_(agrees.to(count.dtype))
    return total / count.clamp(min=1)


@merger(
    name="ties",
    citation="Yadav et al., TIES-Merging: Resolving Interference When Merging Models, "
    "NeurIPS 2023, arXiv 2306.01708",
    ranges={"k": Interval(0.0, 1.0)},
)
def ties(tau: torch.Tensor, layout: Layout, *, k: float = 0.2) -> torch.Tensor:
    """TIES with top-k trimming over the WHOLE flattened vector of each task (global, not per tensor).

    k in (0, 1] is the kept fraction: each task keeps its ⌈k·P⌉ largest-|τt| entries plus any tied
    with the smallest of them (see `magnitude_threshold`); then `elect_sign` and `disjoint_mean`.
    """
    if tau.shape[1] == 0:
        return tau.sum(dim=0)
    count = keep_count(k, tau.shape[1])
    thresholds = [magnitude_threshold(row, count) for row in tau]

    def trimmed_rows():
        return (trim(row, threshold) for row, threshold in zip(tau, thresholds))

    gamma = elect_sign(trimmed_rows())
    return disjoint_mean(trimmed_rows(), gamma)
