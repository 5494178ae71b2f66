"""TIES-merging: trim, elect sign, disjoint mean (METHODS §2).

Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023,
arXiv 2306.01708. Two streaming passes: one radix selection of every task's global magnitude
threshold (`ww.engine.selection`, no sort, no P-sized copy), then one pass that trims, elects and averages
block by block. Memory beyond the input is the output plus bounded block temporaries.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..engine import speculation
from ..engine.blockops import at_least
from ..engine.compiling import kernel
from ..engine.selection import kth_largest_magnitudes
from ..engine.streaming import TaskStream
from ..hyperparams import Interval
from ..registry import merger


def keep_count(k: float, num_params: int) -> int:
    """How many entries "the top k fraction" of ``num_params`` is: ⌈k·P⌉, at least 1.

    k is read as the decimal it was written as (``Fraction(repr(k))``), so 0.1 of 30 entries is 3,
    not the 4 that ⌈0.1·30⌉ gives in binary floating point.
    """
    return max(1, math.ceil(Fraction(repr(float(k))) * num_params))


def top_k_thresholds(tasks: TaskStream, k: float) -> torch.Tensor:
    """Per task the ⌈k·P⌉-th largest |τt| over the whole flattened vector, as ``[T, 1]``.

    Keeping ``|τt| >= threshold`` keeps at least that many entries: entries equal to the threshold
    are all kept, so ties can keep more (METHODS §2: "entries equal to the threshold are kept").
    """
    if tasks.num_params == 0:
        return torch.zeros(tasks.num_tasks, 1, dtype=tasks.dtype)
    count = keep_count(k, tasks.num_params)
    return kth_largest_magnitudes(tasks, [count] * tasks.num_tasks).to(tasks.dtype)


def _ties_fused(tau: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """`ties_block` for the compiler: 0/1 masks by ``where``, the task loop unrolled.

    Unrolled (one compiled variant per T), the loop over tasks has no bounds checks inside and
    inductor keeps every row in registers, which a reduction over a symbolic task axis does not
    (measured in docs/PERF.md).
    """
    return _elect_and_average([torch.where(tau[t].abs() >= thresholds[t], tau[t], 0.0) for t in range(tau.shape[0])])


def _elect_and_average(rows: list[torch.Tensor]) -> torch.Tensor:
    """Elected sign and disjoint mean of the trimmed rows (the arithmetic every compiled TIES shares)."""
    total, positive, negative = rows[0], torch.where(rows[0] > 0, 1.0, 0.0), torch.where(rows[0] < 0, 1.0, 0.0)
    for row in rows[1:]:
        total = total + row
        positive = positive + torch.where(row > 0, 1.0, 0.0)
        negative = negative + torch.where(row < 0, 1.0, 0.0)
    votes = positive - negative
    gamma = torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, torch.where(
        votes > 0, 1.0, torch.where(votes < 0, -1.0, 0.0))))
    magnitude, count = torch.zeros_like(total), torch.zeros_like(total)
    for row in rows:
        agreeing = row * gamma
        magnitude = magnitude + torch.where(agreeing > 0, agreeing, 0.0)
        count = count + torch.where(agreeing > 0, 1.0, 0.0)
    return magnitude / count.clamp(min=1.0) * gamma


def _ties_speculative_fused(tau: torch.Tensor, highs: torch.Tensor, lows: torch.Tensor):
    """`ties_speculative` for the compiler: one loop for the merge, the flags and the counts.

    Float 0/1 flags and float counts on purpose: a bool output made inductor's loop 2.5x slower,
    integer counts 1.2x. Σ|τ| is taken as a maximum (NaN and Inf propagate) to avoid a second
    float sum, which inductor compiles as a costly cascade summation.
    """
    sizes = [tau[t].abs() for t in range(tau.shape[0])]
    merged = _elect_and_average([torch.where(sizes[t] >= highs[t], tau[t], 0.0) for t in range(tau.shape[0])])
    reached_high = [torch.where(size >= high, 1.0, 0.0) for size, high in zip(sizes, highs)]
    uncertain = [torch.where(size >= low, 1.0, 0.0) - flag for size, low, flag in zip(sizes, lows, reached_high)]
    flags, total = uncertain[0], sizes[0]
    for t in range(1, tau.shape[0]):
        flags = torch.maximum(flags, uncertain[t])
        total = total + sizes[t]
    return merged, flags, torch.stack([flag.sum() for flag in reached_high]), total.amax()


@kernel(_ties_fused)
def ties_block(tau: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """TIES on a ``[T, n]`` block given each task's trimming threshold (``[T, 1]``).

    Trim: entries with |τt| below the threshold become 0. Elect: γ = sign(Σt trimmed τt); where
    that sum is exactly 0 but some entry survived, the majority sign sign(#positive − #negative),
    and γ = 0 if the vote ties too (no task agrees, the mean is 0 there; choosing 0 rather than +1
    keeps TIES odd, ties(−τ) = −ties(τ); the TIES reference code breaks zero sums with one global
    majority instead, which differs only on exact zero sums of non-zero entries, rare with floats).
    Disjoint mean: the mean over tasks whose trimmed entry is non-zero and has sign γ, else 0.
    """
    trimmed = at_least(tau.abs(), thresholds).mul_(tau)
    total = trimmed.sum(dim=0)
    votes = trimmed.sign().sum(dim=0)
    gamma = total.sign_()
    gamma.add_(votes.sign_().mul_(1 - gamma.abs()))  # the majority sign only where the sum is 0
    agreeing = trimmed.mul_(gamma).clamp_(min=0)  # |entry| where its sign is γ, else 0
    magnitude = agreeing.sum(dim=0)
    count = agreeing.sign_().sum(dim=0)
    return magnitude.div_(count.clamp_(min=1)).mul_(gamma)


@kernel(_ties_speculative_fused)
def ties_speculative(tau: torch.Tensor, highs: torch.Tensor, lows: torch.Tensor):
    """TIES at thresholds ``highs`` plus what `ww.engine.speculation.top_k_map` needs to correct it: per
    column 1.0 if some |τt| lies in [lowt, hight) else 0.0, per task #(|τt| >= hight), and a value
    that is finite iff the block is."""
    sizes = tau.abs()
    uncertain = ((sizes >= lows) & (sizes < highs)).any(dim=0).to(tau.dtype)
    return ties_block(tau, highs), uncertain, (sizes >= highs).sum(dim=1).to(tau.dtype), sizes.sum(dim=0).amax()


@merger(
    name="ties",
    citation="Yadav et al., TIES-Merging: Resolving Interference When Merging Models, "
    "NeurIPS 2023, arXiv 2306.01708",
    ranges={"k": Interval(0.0, 1.0)},
)
def ties(tasks: TaskStream, *, k: float = 0.2) -> torch.Tensor:
    """TIES with top-k trimming over the WHOLE flattened vector of each task (global, not per tensor).

    k in (0, 1] is the kept fraction: each task keeps its ⌈k·P⌉ largest-|τt| entries plus any tied
    with the smallest of them (see `top_k_thresholds`); then `ties_block` elects and averages.
    """
    block_ties = ties_block.for_params(tasks.num_params)
    if block_ties is not ties_block.eager and speculation.applies(tasks):
        counts = [keep_count(k, tasks.num_params)] * tasks.num_tasks
        return speculation.top_k_map(tasks, counts, ties_speculative.compiled, block_ties)
    thresholds = top_k_thresholds(tasks, k)
    return tasks.map(lambda tau, block: block_ties(tau, thresholds))
