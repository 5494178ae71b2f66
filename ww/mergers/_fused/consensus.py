"""Consensus merging for the compiler (`ww.kernels`): the fused twin of `ww.mergers.consensus.consensus_block`."""

from __future__ import annotations

import torch


def consensus_block(tau: torch.Tensor, tall_lambda: float, k: int) -> torch.Tensor:
    """`ww.mergers.consensus.consensus_block` for the compiler: the same comparisons, the task loop unrolled."""
    rows = [tau[t] for t in range(tau.shape[0])]
    multi_task = rows[0]
    for row in rows[1:]:
        multi_task = multi_task + row
    users = torch.zeros_like(multi_task)
    for row in rows:
        users = users + torch.where(row.abs() >= (multi_task - row).abs() * tall_lambda, 1.0, 0.0)
    return torch.where(users >= k, multi_task, 0.0)
