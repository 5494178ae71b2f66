"""DARE for the compiler (`ww.kernels`): the drop mask computed in one fused loop.

The same 16-bit draws as the readable `ww.mergers.dare.drop_block` (`ww.engine.counter_rng`),
computed by `hash32_wide` in int64 arithmetic so that inductor fuses hashing, comparison and
rescaling; `drop_sum_block` also sums over tasks, so DARE then task arithmetic never writes the
dropped block out.
"""

from __future__ import annotations

import torch

from ...engine.counter_rng import hash32_wide


def drop_block(tau, positions, offset, keys, cutoff: int, scale: float) -> torch.Tensor:
    """`ww.mergers.dare.drop_block` for the compiler: the same draws, by `hash32_wide`, in one loop."""
    if positions is None:
        positions = torch.arange(tau.shape[1], device=tau.device) + offset
    rows = torch.arange(tau.shape[0], device=tau.device)
    low, high = keys[0][rows // 2].unsqueeze(1), keys[1][rows // 2].unsqueeze(1)
    words = hash32_wide(positions.unsqueeze(0) ^ low) ^ high
    halves = (words >> (16 * (rows % 2)).unsqueeze(1)) & 0xFFFF
    # the half read as int16 is >= cutoff exactly when its offset-binary form is >= cutoff + 32768
    keep = (halves ^ 0x8000) >= cutoff + 32768
    return torch.where(keep, tau * scale, 0.0)


def drop_sum_block(tau, positions, offset, keys, cutoff: int, scale: float) -> torch.Tensor:
    """Σt of the dropped block (DARE then task arithmetic) without writing the dropped block out."""
    return drop_block(tau, positions, offset, keys, cutoff, scale).sum(dim=0)
