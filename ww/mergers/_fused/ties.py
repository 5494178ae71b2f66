"""TIES for the compiler (`ww.kernels`): the fused twin of `ww.mergers.ties.ties_block` and the one-pass form.

`ties_block` computes what the readable `ww.mergers.ties.ties_block` computes (trim, elect,
disjoint mean; docs/METHODS.md §2), written as 0/1 masks by ``where`` with the task loop unrolled so
that inductor fuses it into one loop. The tests compare both against the readable form.

`one_pass` merges a resident bank in a single pass at each task's sampled upper bracket and lets
`ww.engine.speculation.top_k_map` redo the few columns whose keep/drop decisions depend on the
exact threshold, so TIES needs no separate selection pass.
"""

from __future__ import annotations

import torch

from ...engine import speculation
from ...engine.compiling import Kernel
from ...engine.streaming import TaskStream


def ties_block(tau: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """`ww.mergers.ties.ties_block` for the compiler: 0/1 masks by ``where``, the task loop unrolled.

    Unrolled (one compiled variant per T), the loop over tasks has no bounds checks inside and
    inductor keeps every row in registers, which a reduction over a symbolic task axis does not.
    """
    return elect_and_average([torch.where(tau[t].abs() >= thresholds[t], tau[t], 0.0) for t in range(tau.shape[0])])


def elect_and_average(rows: list[torch.Tensor]) -> torch.Tensor:
    """Elected sign and disjoint mean of the trimmed rows (the arithmetic every compiled TIES shares)."""
    total, positive, negative = rows[0], torch.where(rows[0] > 0, 1.0, 0.0), torch.where(rows[0] < 0, 1.0, 0.0)
    for row in rows[1:]:
        total = total + row
        positive = positive + torch.where(row > 0, 1.0, 0.0)
        negative = negative + torch.where(row < 0, 1.0, 0.0)
    votes = positive - negative
    gamma = torch.where(
        total > 0, 1.0, torch.where(total < 0, -1.0, torch.where(votes > 0, 1.0, torch.where(votes < 0, -1.0, 0.0)))
    )
    magnitude, count = torch.zeros_like(total), torch.zeros_like(total)
    for row in rows:
        agreeing = row * gamma
        magnitude = magnitude + torch.where(agreeing > 0, agreeing, 0.0)
        count = count + torch.where(agreeing > 0, 1.0, 0.0)
    return magnitude / count.clamp(min=1.0) * gamma


def _ties_speculative(tau: torch.Tensor, highs: torch.Tensor, lows: torch.Tensor):
    """TIES at thresholds ``highs`` plus what `ww.engine.speculation.top_k_map` needs to correct it: per
    column 1.0 if some |τt| lies in [lowt, hight) else 0.0, per task #(|τt| >= hight), and a value
    that is finite iff the block is; one loop for the merge, the flags and the counts.

    Float 0/1 flags and float counts on purpose: inductor vectorises them where bool outputs and
    integer counts slow its loop down. Σ|τ| is taken as a maximum (NaN and Inf propagate) to avoid
    a second float sum, which inductor compiles as a costly cascade summation.
    """
    sizes = [tau[t].abs() for t in range(tau.shape[0])]
    merged = elect_and_average([torch.where(sizes[t] >= highs[t], tau[t], 0.0) for t in range(tau.shape[0])])
    reached_high = [torch.where(size >= high, 1.0, 0.0) for size, high in zip(sizes, highs)]
    uncertain = [torch.where(size >= low, 1.0, 0.0) - flag for size, low, flag in zip(sizes, lows, reached_high)]
    flags, total = uncertain[0], sizes[0]
    for t in range(1, tau.shape[0]):
        flags = torch.maximum(flags, uncertain[t])
        total = total + sizes[t]
    return merged, flags, torch.stack([flag.sum() for flag in reached_high]), total.amax()


ties_speculative = Kernel(_ties_speculative, name="ties_speculative")
"""The one-pass block kernel; only ever run compiled (its eager form, the same function, answers
only if the compile fails)."""


def one_pass_applies(tasks: TaskStream) -> bool:
    """Whether `one_pass` can merge this stream (a resident bank that can be sampled by column)."""
    return speculation.applies(tasks)


def one_pass(tasks: TaskStream, counts: list[int], block_ties) -> torch.Tensor:
    """TIES keeping each task's ``counts[t]`` largest |τt| in one pass over the bank; ``block_ties``
    (the compiled `ww.mergers.ties.ties_block`) redoes the columns the sampled brackets left open."""
    return speculation.top_k_map(tasks, counts, ties_speculative.compiled, block_ties)
