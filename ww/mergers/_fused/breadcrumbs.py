"""Model Breadcrumbs for the compiler (`ww.kernels`): twins of the row selection and the masked sum.

`largest_pair` finds the same two order statistics per row as the readable
`ww.mergers.breadcrumbs.largest_pair` (a ``torch.topk`` selection), by a bitwise search that the
compiler vectorises; `masked_sum` is `ww.mergers.breadcrumbs.masked_sum` as one loop. Both are exact.
"""

from __future__ import annotations

import torch


def largest_pair(keys: torch.Tensor, first: int, second: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`ww.mergers.breadcrumbs.largest_pair` for the compiler, on non-negative int32 keys: each
    value built bit by bit from the top, a bit set when at least that many keys reach the value so
    far with it set. 31 counts per rank over a row that stays in cache, in one loop, which the
    compiler vectorises where `torch.topk` cannot. Exact, ties included."""
    found = [torch.zeros_like(keys[..., :1]), torch.zeros_like(keys[..., :1])]
    for bit in range(30, -1, -1):
        for index, rank in enumerate((first, second)):
            trial = found[index] + (1 << bit)  # the bits below are 0: + sets the bit, never overflows
            # float counts: exact below 2^24, and inductor vectorises them where it does not int64 sums
            count = torch.where(keys >= trial, 1.0, 0.0).sum(dim=-1, keepdim=True)
            found[index] = torch.where(count >= rank, trial, found[index])
    return found[0], found[1]


def masked_sum(rows: torch.Tensor, magnitude: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """`ww.mergers.breadcrumbs.masked_sum` for the compiler: one loop, the task loop unrolled."""
    total = None
    for task in range(rows.shape[0]):
        kept = torch.where((magnitude[task] >= lower[task]) & (magnitude[task] <= upper[task]), rows[task], 0.0)
        total = kept if total is None else total + kept
    return total
