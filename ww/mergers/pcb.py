"""PCB-merging: parameter competition balancing (METHODS §2).

Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS 2024, arXiv 2410.02396.
All statistics are per task over the whole flattened vector (global, like TIES):

1. clamp |τt| to its own 1 % / 99 % quantiles [lo_t, hi_t] (outliers would dominate the scores),
   keeping signs: τ̃t = sign(τt)·clamp(|τt|, lo_t, hi_t);
2. normalise magnitudes to [0, 1]: m_t = (clamp(|τt|) − lo_t) / (hi_t − lo_t) (0 if hi_t = lo_t),
   and signed n_t = sign(τt)·m_t;
3. intra-balancing exp(T·m_t²) (self-importance, sharper with more tasks); inter-balancing
   Σj tanh(n_t ⊙ n_j) (agreement with every task, itself included);
4. β_t = intra ⊙ inter; keep the top ratio = 5 % of β_t (⌈ratio·P⌉ entries, ties kept) as weights
   s_t = β_t there (and where β_t > 0), 0 elsewhere;
5. M = Σt s_t ⊙ τ̃t / max(Σt s_t, 1e-12).

Decisions where METHODS leaves room, stated here and in the closing note: the quantiles are the
sorted positions ⌊0.01·P⌋ and ⌊0.99·P⌋ − 1 (0-based, as the authors' ``clamp``); n_t carries the
sign so inter-balancing rewards agreement (the paper's Norm(τi ⊙ τj) is signed; the authors' code
uses tanh(τi ⊙ Σj τj)); the weights are the kept β themselves (the paper's m ⊙ β; the authors'
code min-max rescales them per task); the clamped τ̃t are the ones averaged (as the code does).

Cost: inter-balancing needs T(T+1)/2 tanh per entry. With eager kernels β is computed once and
cached (one extra ``[T, P]`` copy, the one the issue allows) when the bank is in memory and fits
`CACHE_BYTES`; memory-mapped banks, weaving (whose bound is T + 3 models) and the compiled
kernels (`ww.kernels`, one fused loop per block) recompute it in each pass that needs it.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import torch

from .. import speculation
from ..blockops import at_least
from ..hyperparams import Interval
from ..kernels import Kernel, kernel
from ..registry import merger
from ..selection import kth_largest, magnitudes
from ..streaming import Block, TaskStream
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
            inter[t + 1:] += tanh[1:]
    intra = magnitude.square_().mul_(num_tasks).exp_()
    return intra.mul_(inter)


def _balance_scores_fused(tau: torch.Tensor, low, high, inverse_span) -> torch.Tensor:
    """`balance_scores` for the compiler: the same terms, added in the same order, task loops unrolled.

    All T(T+1)/2 products, exps and quotients of a column stay in registers: one loop over the
    block instead of ~5 passes per pair of tasks.
    """
    num_tasks = tau.shape[0]
    magnitude, signed = [], []
    for t in range(num_tasks):
        clamped = torch.maximum(torch.minimum(tau[t].abs(), high[t]), low[t])
        magnitude.append((clamped - low[t]) * inverse_span[t])
        signed.append(tau[t].sign() * magnitude[t])
    inter = [torch.zeros_like(magnitude[0]) for _ in range(num_tasks)]
    for t in range(num_tasks):
        factor = signed[t] * -2
        row_sum = None
        for j in range(t, num_tasks):
            exp = (signed[j] * factor).exp()
            tanh = (1 - exp) / (exp + 1)
            row_sum = tanh if row_sum is None else row_sum + tanh
            if j > t:
                inter[j] = inter[j] + tanh
        inter[t] = inter[t] + row_sum
    return torch.stack([(magnitude[t] * magnitude[t] * num_tasks).exp() * inter[t] for t in range(num_tasks)])


balance_scores = Kernel(balance_scores, _balance_scores_fused, name="pcb_balance_scores")


def _pcb_block_fused(tau, scores, low, high, inverse_span, score_threshold) -> torch.Tensor:
    """`pcb_block` for the compiler (task loop unrolled, sums in the eager order)."""
    numerator, total = None, None
    for t in range(tau.shape[0]):
        clamped = torch.maximum(torch.minimum(tau[t].abs(), high[t]), low[t])
        weight = torch.where(scores[t] >= score_threshold[t], scores[t], 0.0).clamp(min=0)
        term = clamped * tau[t].sign() * weight
        numerator = term if numerator is None else numerator + term
        total = weight if total is None else total + weight
    return numerator / total.clamp(min=1e-12)


@kernel(_pcb_block_fused)
def pcb_block(tau, scores, low, high, inverse_span, score_threshold) -> torch.Tensor:
    """Σt s_t ⊙ τ̃t / max(Σt s_t, 1e-12) for a block, s_t = β_t kept where β_t ≥ threshold_t and β_t > 0."""
    clamped, _ = _normalised(tau, low, high, inverse_span)
    weights = at_least(scores, score_threshold).mul_(scores).clamp_(min=0)
    numerator = (clamped.mul_(tau.sign()).mul_(weights)).sum(dim=0)
    return numerator.div_(weights.sum(dim=0).clamp_(min=1e-12))


def _pcb_speculative_fused(tau, low, high, inverse_span, highs, lows):
    """`pcb_speculative` for the compiler: scores, merge, flags and counts in one loop."""
    scores = _balance_scores_fused(tau, low, high, inverse_span)
    merged = _pcb_block_fused(tau, scores, low, high, inverse_span, highs)
    reached_high = [torch.where(scores[t] >= highs[t], 1.0, 0.0) for t in range(tau.shape[0])]
    flags = None
    for t in range(tau.shape[0]):
        uncertain = torch.where(scores[t] >= lows[t], 1.0, 0.0) - reached_high[t]
        flags = uncertain if flags is None else torch.maximum(flags, uncertain)
    return merged, flags, torch.stack([flag.sum() for flag in reached_high]), tau.new_zeros(())


@kernel(_pcb_speculative_fused)
def pcb_speculative(tau, low, high, inverse_span, highs, lows):
    """PCB at score thresholds ``highs`` plus what `ww.speculation.top_k_map` needs to correct it
    (the blocks were validated by the quantile pass, so the finiteness value is a plain 0)."""
    scores = balance_scores(tau, low, high, inverse_span)
    uncertain = ((scores >= lows) & (scores < highs)).any(dim=0).to(tau.dtype)
    at_high = (scores >= highs).sum(dim=1).to(tau.dtype)
    return pcb_block(tau, scores, low, high, inverse_span, highs), uncertain, at_high, tau.new_zeros(())


@merger(
    name="pcb",
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
    # are cheaper to recompute than to write to fresh memory and read back (2.9 s vs 3.1 s, B-32 x 8)
    if (tasks.in_memory and tasks.finish is None and num_tasks * num_params * itemsize <= CACHE_BYTES
            and score is balance_scores.eager):
        cache = torch.empty(num_tasks, num_params, dtype=tasks.dtype)

        def fill(tau: torch.Tensor, block: Block) -> None:
            cache[:, block.start:block.stop] = scores_of(tau, block)

        tasks.scan(fill)
        scores_of = lambda tau, block: cache[:, block.start:block.stop]  # noqa: E731

    if block_pcb is not pcb_block.eager and speculation.applies(tasks):  # one pass for scores and merge
        def speculate(tau: torch.Tensor, highs: torch.Tensor, lows: torch.Tensor):
            return pcb_speculative.compiled(tau, low, high, inverse_span, highs, lows)

        def exact(tau: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
            return block_pcb(tau, score(tau, low, high, inverse_span), low, high, inverse_span, thresholds)

        counts = [keep_count(ratio, num_params)] * num_tasks
        return speculation.top_k_map(tasks, counts, speculate, exact, values=scores_of, column_values=computed,
                                     nonnegative=False)
    ranks = torch.tensor([[keep_count(ratio, num_params)]] * num_tasks)
    threshold = kth_largest(tasks, scores_of, ranks, sample_values=computed).to(tasks.dtype)
    return tasks.map(lambda tau, block: block_pcb(tau, scores_of(tau, block), low, high, inverse_span, threshold))
