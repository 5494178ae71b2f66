"""Which floating dtype arithmetic runs in.

Half-precision task vectors lose too much in sums over tasks and in magnitude comparisons, so every
merger and pooling computes fp16/bf16 inputs in fp32 and returns the input dtype (task contract);
fp32 and fp64 are computed as they are.
"""

from __future__ import annotations

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16, the dtype itself otherwise."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def to_compute_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in its compute dtype; the same object (no copy) when already there, so never write to it."""
    return tensor.to(compute_dtype(tensor.dtype))
