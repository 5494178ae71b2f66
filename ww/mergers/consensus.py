"""Consensus merging with TALL masks over task arithmetic (docs/METHODS.md §2).

Wang et al., "Localizing Task Information for Improved Model Merging and Compression", ICML 2024,
arXiv 2405.07813. τMTL = Σt τt; task t "uses" entry i when |τt| ≥ λ·|τMTL − τt| (its TALL mask,
with the data-free λ = 0.4); entries used by fewer than k = 2 tasks are selfish or catastrophic
weights and are zeroed: M = 1[Σt mask_t ≥ k] ⊙ τMTL. Everything is per entry, so one pass.
The compiled twin of `consensus_block` is in ``ww/mergers/_fused/consensus.py``.
"""

from __future__ import annotations

import torch

from ..engine.blockops import at_least
from ..engine.compiling import kernel
from ..engine.streaming import TaskStream
from ..hyperparams import Interval
from ..registry import merger, require_tasks
from ._fused import consensus as fused


def tall_masks(tau: torch.Tensor, tall_lambda: float, multi_task: torch.Tensor | None = None) -> torch.Tensor:
    """The TALL masks 1[|τt| ≥ λ·|τMTL − τt|] of a ``[T, n]`` block, as 0/1 floats ``[T, n]``.

    Shared with `ww.analysis` (the consensus histogram counts the same masks the merger uses).
    """
    if multi_task is None:
        multi_task = tau.sum(dim=0)
    others = (multi_task - tau).abs_().mul_(tall_lambda)
    return at_least(tau.abs(), others)


@kernel(fused.consensus_block)
def consensus_block(tau: torch.Tensor, tall_lambda: float, k: int) -> torch.Tensor:
    """1[#{t : |τt| ≥ λ·|τMTL − τt|} ≥ k] ⊙ τMTL on a ``[T, n]`` block."""
    multi_task = tau.sum(dim=0)
    users = tall_masks(tau, tall_lambda, multi_task).sum(dim=0)
    return at_least(users, k).mul_(multi_task)


@merger(
    name="consensus",
    citation="Wang et al., Localizing Task Information for Improved Model Merging and Compression "
    "(TALL masks, Consensus Merging), ICML 2024, arXiv 2405.07813",
    ranges={
        "tall_lambda": Interval(0.0, float("inf"), low_closed=True),
        "k": Interval(1, float("inf"), low_closed=True),
    },
    revision=2,  # 2: entries used by exactly k tasks are kept on fp32 banks (at_least with a scalar threshold)
)
def consensus(tasks: TaskStream, *, tall_lambda: float = 0.4, k: int = 2) -> torch.Tensor:
    """Consensus TA: τMTL kept where at least k tasks' TALL masks (λ = 0.4) agree, 0 elsewhere."""
    require_tasks(tasks, k, "consensus", f"an entry must be used by k = {k} tasks to be kept")
    return tasks.map_kernel(consensus_block, tall_lambda=tall_lambda, k=k)
