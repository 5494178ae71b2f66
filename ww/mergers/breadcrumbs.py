"""Model Breadcrumbs: per row, drop the largest outliers and the small tail, sum (docs/METHODS.md §2).

Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks",
ECCV 2024, arXiv 2312.06795. For every task and every row of the last dimension (a length-d slice
``tensor[..., :]``), rank the entries by |τt|: the ⌊γ·d⌋ largest are outliers and are zeroed, and of
the remaining d − ⌊γ·d⌋ only the top ⌈β·(d − ⌊γ·d⌋)⌉ are kept; M = Σt masked τt. Defaults β = 0.1
(keep) and γ = 0.01 (remove), the maintainers' CLIP setting. 0-D tensors have no row and are summed
untouched. Fractions are read as the decimals they were written as (`ww.mergers.ties.keep_count`).

Ties in magnitude: an entry is kept when ``lower <= |τ| <= upper``, with ``upper`` the largest
magnitude left after removing the ⌊γ·d⌋ largest entries and ``lower`` the smallest of the ones to
keep; with distinct magnitudes that is exactly the counts above, with ties it keeps every entry
equal to a boundary (as TIES keeps entries equal to its threshold). The compiled forms of the
row selection and the masked sum are in ``ww/mergers/_fused/breadcrumbs.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..engine.blockops import at_least
from ..engine.compiling import Kernel, kernel
from ..engine.streaming import Block, TaskStream
from ..hyperparams import Interval
from ..registry import merger
from ._fused import breadcrumbs as fused
from .ties import keep_count


def row_counts(row_length: int, beta: float, gamma: float) -> tuple[int, int]:
    """(removed, kept) entries of a row of ``row_length``: ⌊γ·d⌋ and ⌈β·(d − ⌊γ·d⌋)⌉ (at most what is left)."""
    removed = math.floor(Fraction(repr(float(gamma))) * row_length)
    left = row_length - removed
    kept = min(left, keep_count(beta, left)) if left else 0
    return removed, kept


_INTEGER_OF = {torch.float32: torch.int32, torch.float64: torch.int64}


def breadcrumbs_block(tau: torch.Tensor, block: Block, beta: float, gamma: float, num_params: int = 0) -> torch.Tensor:
    """Σt of the masked rows of a ``[T, n]`` block made of whole rows of tensor ``block.name``
    (``num_params``, the stream's size, decides whether the selection and the masked sum run
    compiled, `ww.kernels`)."""
    if len(block.shape) == 0:
        return tau.sum(dim=0)
    row_length = block.shape[-1]
    removed, kept = row_counts(row_length, beta, gamma)
    if kept == 0:
        return tau.new_zeros(tau.shape[1])
    rows = tau.reshape(tau.shape[0], -1, row_length)
    magnitude = rows.abs()
    # Non-negative floats order like their bit patterns read as integers: rows are ranked by
    # those keys (faster to select among, and exact to count against in a compiled loop).
    keys = magnitude.view(_INTEGER_OF[magnitude.dtype]) if magnitude.dtype in _INTEGER_OF else magnitude
    # the compiled search covers 31-bit keys (fp32, the compute dtype of fp16/bf16 banks too)
    select = largest_pair.for_params(num_params) if keys.dtype == torch.int32 else largest_pair.eager
    lower, upper = (key.view(magnitude.dtype) for key in select(keys, removed + kept, removed + 1))
    return masked_sum.for_params(num_params)(rows, magnitude, lower, upper).reshape(-1)


def _largest_pair_by_topk(keys: torch.Tensor, first: int, second: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`largest_pair` eagerly: the larger rank's largest keys of each row (one selection,
    unordered, no sort), then the two order statistics among them. Int32 keys because torch.topk
    selects them faster than fp32 values."""
    count = max(first, second)
    top = keys.topk(count, dim=-1, sorted=False).values

    def largest(rank: int) -> torch.Tensor:
        if rank == count:
            return top.amin(dim=-1, keepdim=True)
        return top.kthvalue(count - rank + 1, dim=-1, keepdim=True).values

    return largest(first), largest(second)


largest_pair = Kernel(_largest_pair_by_topk, fused.largest_pair, name="breadcrumbs_select")
"""The ``first``-th and ``second``-th largest keys of every row (ranks from 1), as ``[..., 1]``."""


@kernel(fused.masked_sum)
def masked_sum(rows: torch.Tensor, magnitude: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Σt of the ``[T, R, d]`` rows where ``lower <= |τ| <= upper`` (bounds ``[T, R, 1]``), as ``[R, d]``."""
    mask = at_least(magnitude, lower).mul_(at_least(upper, magnitude))
    return mask.mul_(rows).sum(dim=0)


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
    return tasks.map(
        lambda tau, block: breadcrumbs_block(tau, block, beta, gamma, tasks.num_params), granularity="rows"
    )
