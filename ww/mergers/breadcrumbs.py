"""Model Breadcrumbs: per row, drop the largest outliers and the small tail, sum (METHODS §2).

Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks",
ECCV 2024, arXiv 2312.06795. For every task and every row of the last dimension (a length-d slice
``tensor[..., :]``), rank the entries by |τt|: the ⌊γ·d⌋ largest are outliers and are zeroed, and of
the remaining d − ⌊γ·d⌋ only the top ⌈β·(d − ⌊γ·d⌋)⌉ are kept; M = Σt masked τt. Defaults β = 0.1
(keep) and γ = 0.01 (remove), the maintainers' CLIP setting. 0-D tensors have no row and are summed
untouched. Fractions are read as the decimals they were written as (`ww.mergers.ties.keep_count`).

Ties in magnitude: an entry is kept when ``lower <= |τ| <= upper``, with ``upper`` the largest
magnitude left after removing the ⌊γ·d⌋ largest entries and ``lower`` the smallest of the ones to
keep; with distinct magnitudes that is exactly the counts above, with ties it keeps every entry
equal to a boundary (as TIES keeps entries equal to its threshold).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..blockops import at_least
from ..hyperparams import Interval
from ..registry import merger
from ..streaming import Block, TaskStream
from .ties import keep_count


def row_counts(row_length: int, beta: float, gamma: float) -> tuple[int, int]:
    """(removed, kept) entries of a row of ``row_length``: ⌊γ·d⌋ and ⌈β·(d − ⌊γ·d⌋)⌉ (at most what is left)."""
    removed = math.floor(Fraction(repr(float(gamma))) * row_length)
    left = row_length - removed
    kept = min(left, keep_count(beta, left)) if left else 0
    return removed, kept


def breadcrumbs_block(tau: torch.Tensor, block: Block, beta: float, gamma: float) -> torch.Tensor:
    """Σt of the masked rows of a ``[T, n]`` block made of whole rows of tensor ``block.name``."""
    if len(block.shape) == 0:
        return tau.sum(dim=0)
    row_length = block.shape[-1]
    removed, kept = row_counts(row_length, beta, gamma)
    if kept == 0:
        return tau.new_zeros(tau.shape[1])
    rows = tau.reshape(tau.shape[0], -1, row_length)
    magnitude = rows.abs()
    # The removed + kept largest of each row (one selection per row, unordered, no sort): the
    # smallest of them is the lower bound, the kept-th smallest the (removed + 1)-th largest.
    top = magnitude.topk(removed + kept, dim=-1, sorted=False).values
    mask = at_least(magnitude, top.amin(dim=-1, keepdim=True))
    if removed:
        upper = top.kthvalue(kept, dim=-1, keepdim=True).values
        mask.mul_(at_least(upper, magnitude))
    return mask.mul_(rows).sum(dim=0).reshape(-1)


@merger(
    name="breadcrumbs",
    citation="Davari & Belilovsky, Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse "
    "Masks, ECCV 2024, arXiv 2312.06795",
    ranges={
        "beta": Interval(0.0, 1.0),
        "gamma": Interval(0.0, 1.0, low_closed=True, high_closed=False),
    },
)
def breadcrumbs(tasks: TaskStream, *, beta: float = 0.1, gamma: float = 0.01) -> torch.Tensor:
    """M = Σt τt masked per row: outliers (top γ) removed, the next β fraction of the rest kept."""
    return tasks.map(lambda tau, block: breadcrumbs_block(tau, block, beta, gamma), granularity="rows")
