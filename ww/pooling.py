"""Pooling functions f_pool of Weight Weaving, element-wise over the candidates (METHODS §1).

A pooling is ``f(candidates, *, seed) -> [P]`` over a `Candidates` set, registered in `POOLINGS`
by name. Any registered merger can pool as well; `ww.weave` handles that case by materialising the
candidates and feeding them to the merger as if they were task vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from .candidates import Candidates
from .counter_rng import stream_key, uniform_indices
from .layout import layout_slices
from .mergers.magmax import keep_largest_magnitude

WEIGHT_WEAVING = "Chaves, Valle, Avila, Weight Weaving: Parameter Pooling for Data-Free Model Merging, arXiv 2510.13921"

PoolingFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class PoolingRecord:
    """A registered pooling function and where it is defined."""

    name: str
    function: PoolingFunction
    citation: str

    def __call__(self, candidates: Candidates, *, seed: int = 0) -> torch.Tensor:
        return self.function(candidates, seed=seed)


_POOLINGS: dict[str, PoolingRecord] = {}
POOLINGS: Mapping[str, PoolingRecord] = MappingProxyType(_POOLINGS)
"""Pooling name -> `PoolingRecord` ("avg", "randmix", "magmax"), read-only."""


def pooling(*, name: str, citation: str = WEIGHT_WEAVING) -> Callable[[PoolingFunction], PoolingFunction]:
    """Register ``f(candidates, *, seed)`` as pooling ``name``; returns ``f`` unchanged."""

    def register(function: PoolingFunction) -> PoolingFunction:
        if name in _POOLINGS:
            raise ValueError(f"pooling {name!r} is already registered")
        _POOLINGS[name] = PoolingRecord(name=name, function=function, citation=citation)
        return function

    return register


@pooling(name="avg")
def avg(candidates: Candidates, *, seed: int = 0) -> torch.Tensor:
    """(1/N) Σn Cn in closed form: (Σt τt + (Σi λi)·M) / (T + K), or mean(Λ)·M for the plain set.

    The closed form is the reason weaving with avg costs one merge plus one sum over tasks.
    """
    lambda_sum = math.fsum(candidates.lambdas)
    if candidates.task_vectors is None:
        return candidates.merged * (lambda_sum / len(candidates.lambdas))
    pooled = candidates.task_vectors.sum(dim=0)
    pooled.add_(candidates.merged, alpha=lambda_sum)
    return pooled.div_(len(candidates))


@pooling(name="randmix")
def randmix(candidates: Candidates, *, seed: int = 0, chunk_size: int = 1 << 20) -> torch.Tensor:
    """Per scalar element, one candidate picked uniformly at random.

    The pick for element i of tensor ``name`` is `uniform_indices` of the stream keyed by
    (seed, "randmix", name) at counter i, a pure function of those: the result does not depend on
    ``chunk_size`` (which only bounds memory), the device, or the order of tensors in the layout.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    merged = candidates.merged
    tasks = candidates.task_vectors
    num_tasks = candidates.num_tasks
    lambdas = torch.tensor(candidates.lambdas, dtype=merged.dtype, device=merged.device)
    pooled = torch.empty_like(merged)
    for name, piece in layout_slices(candidates.layout).items():
        key = stream_key(seed, "randmix", name)
        for start in range(piece.start, piece.stop, chunk_size):
            stop = min(start + chunk_size, piece.stop)
            positions = torch.arange(start - piece.start, stop - piece.start, device=merged.device)
            pick = uniform_indices(key, positions, len(candidates))
            values = lambdas[(pick - num_tasks).clamp(min=0)] * merged[start:stop]
            if tasks is not None:
                task = pick.clamp(max=num_tasks - 1).unsqueeze(0)
                from_tasks = tasks[:, start:stop].gather(0, task).squeeze(0)
                values = torch.where(pick < num_tasks, from_tasks, values)
            pooled[start:stop] = values
    return pooled


@pooling(name="magmax")
def magmax(candidates: Candidates, *, seed: int = 0) -> torch.Tensor:
    """Per element the candidate of largest |Cn|, ties to the later one; one λ·M alive at a time."""
    return keep_largest_magnitude(iter(candidates))
