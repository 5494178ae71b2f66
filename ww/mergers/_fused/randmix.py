"""Randmix for the compiler (`ww.kernels`): draw and pick in one fused loop.

The same draws as the readable `ww.mergers.randmix.random_rows` (`ww.engine.counter_rng`), made by
`uniform_indices_wide` in int64 arithmetic for up to `MAX_TASKS` tasks, then one row picked per
entry; the merger falls back to the readable form beyond that.
"""

from __future__ import annotations

import torch

from ...engine.blockops import select_by_index
from ...engine.compiling import Kernel
from ...engine.counter_rng import key_words, stream_key, uniform_indices_wide
from ...engine.streaming import Block

MAX_TASKS = 128
"""Most tasks `uniform_indices_wide` draws among."""


def _picked_rows(tau: torch.Tensor, offset: torch.Tensor, key: torch.Tensor, count: int) -> torch.Tensor:
    """`random_rows` + `pick_rows` for a contiguous block in one fused loop (``count`` <= 128):
    the same draws as `uniform_indices`, at positions ``offset``, ``offset`` + 1, ..."""
    pick = uniform_indices_wide(torch.arange(tau.shape[1], device=tau.device) + offset, key, count)
    return select_by_index([tau[t] for t in range(tau.shape[0])], pick.to(torch.int32))  # see `select_by_index`


picked_rows = Kernel(_picked_rows, name="randmix_merger")


def randmix_block(tau: torch.Tensor, block: Block, seed: int, label: str) -> torch.Tensor:
    """Per entry of a contiguous block, the row `ww.mergers.randmix.random_rows` draws (``tau.shape[0]`` <= 128)."""
    keys = key_words(stream_key(seed, label, block.name), tau.device)
    offset = torch.tensor(block.offset, dtype=torch.int64, device=tau.device)
    return picked_rows.compiled(tau, offset, keys, tau.shape[0])
