"""Task vectors τt = θt − θ0 and their application θ0 + λ·τ (docs/METHODS.md §1 step 1 and step 5).

Only floating-point entries are task-vector entries: integer/bool buffers (e.g. BatchNorm's
``num_batches_tracked``) carry no direction to merge, so they are skipped here and copied from θ0
when a vector is applied (docs/METHODS.md §1, notation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .precision import compute_dtype

StateDict = Mapping[str, torch.Tensor]


def task_vector(finetuned: StateDict, pretrained: StateDict) -> dict[str, torch.Tensor]:
    """τ = θt − θ0 over the float entries (in θ0's key order); non-float entries are skipped.

    Both state dicts must hold the same keys, and matching entries the same shape and dtype; any
    mismatch raises ValueError naming the key.
    """
    for name in pretrained:
        if name not in finetuned:
            raise ValueError(f"fine-tuned state dict lacks {name!r}, which the pretrained one has")
    for name in finetuned:
        if name not in pretrained:
            raise ValueError(f"fine-tuned state dict has {name!r}, which the pretrained one lacks")
    vector = {}
    for name, base in pretrained.items():
        tuned = finetuned[name]
        if tuned.shape != base.shape:
            raise ValueError(f"{name!r}: fine-tuned shape {tuple(tuned.shape)} != pretrained shape {tuple(base.shape)}")
        if tuned.dtype != base.dtype:
            raise ValueError(f"{name!r}: fine-tuned dtype {tuned.dtype} != pretrained dtype {base.dtype}")
        if base.is_floating_point():
            vector[name] = tuned - base
    return vector


def apply_task_vector(pretrained: StateDict, vector: StateDict, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """θ0 + scale·τ for the keys of ``vector``; every other entry of θ0 is copied (cloned) through.

    The sum is computed in fp32 for fp16/bf16 weights and returned in θ0's dtype. Keys of ``vector``
    missing from θ0, shape mismatches and non-float targets raise ValueError naming the key.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    for name, delta in vector.items():
        if name not in pretrained:
            raise ValueError(f"task vector entry {name!r} is not in the pretrained state dict")
        base = pretrained[name]
        if not base.is_floating_point():
            raise ValueError(f"{name!r} is not a float entry of the pretrained state dict ({base.dtype})")
        if delta.shape != base.shape:
            raise ValueError(
                f"{name!r}: task vector shape {tuple(delta.shape)} != pretrained shape {tuple(base.shape)}"
            )
    merged = {}
    for name, base in pretrained.items():
        if name in vector:
            work = compute_dtype(base.dtype)
            summed = base.to(work) + scale * vector[name].to(device=base.device, dtype=work)
            merged[name] = summed.to(base.dtype)
        else:
            merged[name] = base.clone()
    return merged
