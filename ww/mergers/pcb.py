"""PCB-merging: parameter competition balancing, as the Weight Weaving authors run it (docs/METHODS.md §2).

Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS 2024, arXiv 2410.02396.
The paper's numbers come from code, not from the paper's equations: this follows the Weight
Weaving authors' PCB (their ``src/merging/pcb.py``, derived from PCB's ``pcb_ES.py``), written out
in docs/METHODS.md §2 ("PCB") and checked there against an independent fp64 reference
(tests/ww/test_pcb_reference.py). All statistics are per task over the whole flattened vector
(global, like TIES):

1. clamp |τt| to its own 1 % / 99 % quantiles [lo_t, hi_t] (outliers would dominate the scores),
   keeping signs: τ̃t = sign(τt)·clamp(|τt|, lo_t, hi_t);
2. normalise magnitudes to [0, 1]: m_t = (clamp(|τt|) − lo_t) / (hi_t − lo_t) (0 if hi_t = lo_t),
   and signed n_t = sign(τt)·m_t;
3. intra-balancing exp(T·m_t²) (self-importance, sharper with more tasks); inter-balancing
   Σj tanh(n_t ⊙ n_j) (agreement with every task, itself included);
4. β_t = intra ⊙ inter; q_t = its (1 − ratio) quantile (the ⌈ratio·P⌉-th largest, ratio = 5 %);
   weights s_t = (max(β_t, q_t) − q_t) / (max β_t − q_t): min-max rescaled after clamping below
   at q_t, so the largest score weighs 1 and an entry at the threshold 0;
5. M = Σt s_t ⊙ τ̃t / max(Σt s_t, 1e-12).

Quantiles are sorted positions, as the authors' ``clamp``: ⌊0.01·P⌋ and ⌊0.99·P⌋ − 1 (0-based,
ascending) for the magnitudes, ⌊(1 − ratio)·P⌋ for β. Where every kept score of a task equals
its maximum (no range to rescale; 0/0 in the authors' code) those entries weigh 1.

Cost: inter-balancing needs T(T+1)/2 tanh per entry. With eager kernels β is computed once and
cached (one extra ``[T, P]`` copy) when the bank is in memory and fits `CACHE_BYTES`; memory-mapped
banks, weaving (whose bound is T + 3 models) and the compiled kernels (`ww.kernels`, one fused loop
per block) recompute it in each pass that needs it. The maximum and the threshold of β come from
one selection pass. There is no one-pass (`ww.engine.speculation`) form: every weight depends on the
threshold's exact value, not only on which side of it an entry falls. The compiled twins of
`balance_scores` and `pcb_block` are in ``ww/mergers/_fused/pcb.py``.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import torch

from ..engine.blockops import at_least
from ..engine.compiling import Kernel, kernel
from ..engine.selection import kth_largest, magnitudes
from ..engine.streaming import Block, TaskStream
from ..hyperparams import Interval
from ..registry import merger
from ._fused import pcb as fused
from .ties import keep_count

CLAMP_QUANTILE = 0.01
CACHE_BYTES = int(os.environ.get("WW_CACHE_BYTES", 8 << 30))
"""Largest β cache PCB allocates (bytes); set ``WW_CACHE_BYTES=0`` to always recompute."""


def quantile_ranks(num_params: int) -> tuple[int, int]:
    """Ranks from the top (1 = largest) of the 1 % and 99 % quantiles of P magnitudes."""
    fraction = Fraction(repr(CLAMP_QUANTILE))
    low_position = min(math.floor(fraction * num_params), num_params - 1)
    high_position = max(math.floor((1 - fraction) * num_params) - 1, 0)
    return num_params - low_position, num_params - high_position


def _normalised(tau: torch.Tensor, low: torch.Tensor, high: torch.Tensor, inverse_span: torch.Tensor):
    """(clamped |τ|, m) for a block, with ``low``/``high``/``inverse_span`` of shape ``[T, 1]``."""
    clamped = torch.maximum(torch.minimum(tau.abs(), high), low)
    return clamped, (clamped - low).mul_(inverse_span)


def balance_scores(tau: torch.Tensor, low, high, inverse_span) -> torch.Tensor:
    """β = exp(T·m²) ⊙ Σj tanh(n_t ⊙ n_j) for a ``[T, n]`` block (symmetric terms computed once).

    The T(T+1)/2 tanh terms dominate PCB's cost, so they are computed in two reused scratch
    buffers with in-place operations (fresh multi-megabyte outputs cost several times the
    arithmetic): tanh(x) = (1 − e^−2x) / (1 + e^−2x), exact for |x| <= 1 as here, with the −2
    folded into the product.
    """
    num_tasks = tau.shape[0]
    _, magnitude = _normalised(tau, low, high, inverse_span)
    signed = tau.sign().mul_(magnitude)  # n_t, in [-1, 1]
    inter = torch.zeros_like(tau)
    terms = torch.empty_like(tau)
    denominator = torch.empty_like(tau)
    for t in range(num_tasks):
        rows = num_tasks - t
        exp = torch.mul(signed[t:], signed[t] * -2, out=terms[:rows]).exp_()  # e^(-2 n_t n_j), j >= t
        torch.add(exp, 1, out=denominator[:rows])
        tanh = exp.neg_().add_(1).div_(denominator[:rows])  # tanh(n_t n_j)
        inter[t] += tanh.sum(dim=0)
        if rows > 1:
            inter[t + 1 :] += tanh[1:]
    intra = magnitude.square_().mul_(num_tasks).exp_()
    return intra.mul_(inter)


balance_scores = Kernel(balance_scores, fused.balance_scores, name="pcb_balance_scores")


@kernel(fused.pcb_block)
def pcb_block(tau, scores, low, high, inverse_span, threshold, inverse_range, floor) -> torch.Tensor:
    """Σt s_t ⊙ τ̃t / max(Σt s_t, 1e-12) for a block, with the min-max rescaled weights
    s_t = (max(β_t, q_t) − q_t)·inverse_range_t + floor_t·1[β_t ≥ q_t] (`weight_scales`)."""
    clamped, _ = _normalised(tau, low, high, inverse_span)
    weights = (scores - threshold).clamp_(min=0).mul_(inverse_range)
    if bool(floor.any()):
        weights.add_(at_least(scores, threshold).mul_(floor))
    numerator = (clamped.mul_(tau.sign()).mul_(weights)).sum(dim=0)
    return numerator.div_(weights.sum(dim=0).clamp_(min=1e-12))


def weight_scales(peak: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inverse_range, floor), ``[T, 1]`` each, for `pcb_block` from each task's largest score
    and threshold: 1/(max β_t − q_t) and 0, or, when every kept score equals the maximum (no range
    to rescale, where the authors' 0/0 gives NaN), 0 and 1: the kept entries weigh 1 as the
    maximum always does."""
    spread = peak - threshold
    flat = spread <= 0
    inverse_range = torch.where(flat, torch.zeros_like(spread), 1 / torch.where(flat, torch.ones_like(spread), spread))
    return inverse_range, flat.to(spread.dtype)


@merger(
    name="pcb",
    revision=2,  # 2: min-max rescaled weights (β − q)/(max β − q), as the Weight Weaving authors' code
    citation="Du et al., Parameter Competition Balancing for Model Merging, NeurIPS 2024, arXiv 2410.02396",
    ranges={"ratio": Interval(0.0, 1.0)},
)
def pcb(tasks: TaskStream, *, ratio: float = 0.05) -> torch.Tensor:
    """PCB with global 1 %/99 % clamping, intra/inter balancing and the top ``ratio`` of scores kept."""
    num_tasks, num_params = tasks.num_tasks, tasks.num_params
    if num_params == 0:
        return tasks.map(lambda tau, block: tau.sum(dim=0))
    low_rank, high_rank = quantile_ranks(num_params)
    ranks = torch.tensor([[high_rank, low_rank]] * num_tasks)
    quantiles = kth_largest(tasks, magnitudes, ranks, nonnegative=True).to(tasks.dtype)
    high, low = quantiles[:, :1], quantiles[:, 1:]
    span = high - low
    inverse_span = torch.where(span > 0, 1 / span.clamp(min=torch.finfo(tasks.dtype).tiny), torch.zeros_like(span))

    score = balance_scores.for_params(num_params)
    block_pcb = pcb_block.for_params(num_params)

    def scores_of(tau: torch.Tensor, block: Block) -> torch.Tensor:
        return score(tau, low, high, inverse_span)

    computed = scores_of  # β depends on its column only: what a scattered sample needs
    itemsize = torch.empty((), dtype=tasks.dtype).element_size()
    # weaving (a finish hook) promises T + 3 models at most: no [T, P] cache there; compiled scores
    # are cheaper to recompute than to write to fresh memory and read back
    if (
        tasks.in_memory
        and tasks.finish is None
        and num_tasks * num_params * itemsize <= CACHE_BYTES
        and score is balance_scores.eager
    ):
        cache = torch.empty(num_tasks, num_params, dtype=tasks.dtype)

        def fill(tau: torch.Tensor, block: Block) -> None:
            cache[:, block.start : block.stop] = scores_of(tau, block)

        tasks.scan(fill)
        scores_of = lambda tau, block: cache[:, block.start : block.stop]  # noqa: E731

    # the maximum and the threshold of β in one selection pass. No one-pass (speculative) form:
    # every kept weight depends on the exact threshold's value, not only on which side of it an
    # entry falls, so merging at a guessed threshold would be wrong in every column
    ranks = torch.tensor([[1, keep_count(ratio, num_params)]] * num_tasks)
    selected = kth_largest(tasks, scores_of, ranks, sample_values=computed).to(tasks.dtype)
    peak, threshold = selected[:, :1].contiguous(), selected[:, 1:].contiguous()
    inverse_range, floor = weight_scales(peak, threshold)
    return tasks.map(
        lambda tau, block: block_pcb(
            tau, scores_of(tau, block), low, high, inverse_span, threshold, inverse_range, floor
        )
    )
