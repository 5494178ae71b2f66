"""TIES-merging: trim, elect sign, disjoint mean (docs/METHODS.md §2).

Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023,
arXiv 2306.01708. Two streaming passes: one exact selection of every task's global magnitude
threshold (`ww.engine.selection`, no sort, no P-sized copy), then one pass that trims, elects and
averages block by block (`ties_block`, the reference). Memory beyond the input is the output plus
bounded block temporaries. The compiled twin of `ties_block` and the one-pass form for resident
banks are in ``ww/mergers/_fused/ties.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..engine.blockops import at_least
from ..engine.compiling import kernel
from ..engine.selection import kth_largest_magnitudes
from ..engine.streaming import TaskStream
from ..hyperparams import Interval
from ..registry import merger
from ._fused import ties as fused


def keep_count(k: float, num_params: int) -> int:
    """How many entries "the top k fraction" of ``num_params`` is: ⌈k·P⌉, at least 1.

    k is read as the decimal it was written as (``Fraction(repr(k))``), so 0.1 of 30 entries is 3,
    not the 4 that ⌈0.1·30⌉ gives in binary floating point.
    """
    return max(1, math.ceil(Fraction(repr(float(k))) * num_params))


def top_k_thresholds(tasks: TaskStream, k: float) -> torch.Tensor:
    """Per task the ⌈k·P⌉-th largest |τt| over the whole flattened vector, as ``[T, 1]``.

    Keeping ``|τt| >= threshold`` keeps at least that many entries: entries equal to the threshold
    are all kept, so ties can keep more (docs/METHODS.md §2: "entries equal to the threshold are kept").
    """
    if tasks.num_params == 0:
        return torch.zeros(tasks.num_tasks, 1, dtype=tasks.dtype)
    count = keep_count(k, tasks.num_params)
    return kth_largest_magnitudes(tasks, [count] * tasks.num_tasks).to(tasks.dtype)


@kernel(fused.ties_block)
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


@merger(
    name="ties",
    citation="Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023, arXiv 2306.01708",
    ranges={"k": Interval(0.0, 1.0)},
)
def ties(tasks: TaskStream, *, k: float = 0.2) -> torch.Tensor:
    """TIES with top-k trimming over the WHOLE flattened vector of each task (global, not per tensor).

    k in (0, 1] is the kept fraction: each task keeps its ⌈k·P⌉ largest-|τt| entries plus any tied
    with the smallest of them (see `top_k_thresholds`); then `ties_block` elects and averages.
    """
    block_ties = ties_block.for_params(tasks.num_params)
    if block_ties is not ties_block.eager and fused.one_pass_applies(tasks):
        return fused.one_pass(tasks, [keep_count(k, tasks.num_params)] * tasks.num_tasks, block_ties)
    thresholds = top_k_thresholds(tasks, k)
    return tasks.map(lambda tau, block: block_ties(tau, thresholds))
