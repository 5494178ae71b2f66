"""Pooling functions f_pool of Weight Weaving, element-wise over the candidates (docs/METHODS.md §1).

A pooling is a block kernel ``f(tasks, merged, lambdas, block, *, seed) -> [n]``: ``tasks`` is the
``[T, n]`` block of τ1..τT (None for the plain set A), ``merged`` the block of M, and the candidates
are those rows followed by λi·M for λi in Λ. Kernels never build the K scaled candidates; each
needs O(T·n) work per block whatever K is. Registered in `POOLINGS` by name; a record is also
callable on a whole `Candidates` set. Any registered merger can pool as well: `ww.weave` then runs
it over a stream of candidate blocks (`ww.candidates.candidate_stream`).

Like a merger, each pooling carries a ``revision``: bump it whenever the pooled values change for
the same candidates (the rule of `ww.registry`); the benchmark hashes it into every trial that
pools with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from .candidates import Candidates
from .engine.blockops import at_least, choose, largest_magnitude, select_by_index
from .engine.compiling import Kernel
from .engine.counter_rng import key_words, stream_key, uniform_indices_wide
from .engine.streaming import Block
from .kernels import compiled_for
from .mergers.randmix import RANDMIX_LABEL, random_rows
from .registry import check_revision

WEIGHT_WEAVING = "Chaves, Valle, Avila, Weight Weaving: Parameter Pooling for Data-Free Model Merging, arXiv 2510.13921"

PoolingKernel = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class PoolingRecord:
    """A registered pooling kernel, where it is defined and the revision of its output."""

    name: str
    kernel: PoolingKernel
    citation: str
    revision: int = 1
    compiled: PoolingKernel | None = None
    fused: Callable[..., Callable[[torch.Tensor, Block], torch.Tensor]] | None = None
    """``fused(kernel, params, lambdas, collaborative, seed, num_params)``: for a merger whose M is
    a block kernel (`TaskStream.map_kernel`), a block function ``g(tau, block) -> [n]`` that merges
    and pools in one compiled loop, so the pass reads each block of task vectors once; None if the
    pooling has no such form. `ww.weave` uses it when kernels run compiled."""

    def for_params(self, num_params: int) -> PoolingKernel:
        """The block kernel to pool a stream of ``num_params`` parameters with (`ww.kernels`)."""
        if self.compiled is not None and compiled_for(num_params):
            return self.compiled
        return self.kernel

    def __call__(self, candidates: Candidates, *, seed: int = 0, chunk_size: int | None = None) -> torch.Tensor:
        """Pool a whole `Candidates` set into a flat ``[P]`` vector, ``chunk_size`` entries per task at a time."""
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        entries = None if chunk_size is None else chunk_size * max(1, candidates.num_tasks)
        stream = candidates.task_stream(block_entries=entries)
        merged = candidates.merged
        lambdas = tuple(candidates.lambdas)
        collaborative = candidates.task_vectors is not None

        def pool(tau: torch.Tensor, block: Block) -> torch.Tensor:
            return self.kernel(
                tau if collaborative else None, merged[block.start : block.stop], lambdas, block, seed=seed
            )

        return stream.map(pool)


_POOLINGS: dict[str, PoolingRecord] = {}
POOLINGS: Mapping[str, PoolingRecord] = MappingProxyType(_POOLINGS)
"""Pooling name -> `PoolingRecord` ("avg", "randmix", "magmax"), read-only."""


def pooling(
    *, name: str, citation: str = WEIGHT_WEAVING, revision: int = 1
) -> Callable[[PoolingKernel], PoolingRecord]:
    """Register the block kernel ``f(tasks, merged, lambdas, block, *, seed)`` as pooling ``name``
    at ``revision`` (bumped whenever its output changes)."""
    check_revision(f"pooling {name!r}", revision)

    def register(kernel: PoolingKernel) -> PoolingRecord:
        if name in _POOLINGS:
            raise ValueError(f"pooling {name!r} is already registered")
        record = PoolingRecord(name=name, kernel=kernel, citation=citation, revision=revision)
        _POOLINGS[name] = record
        return record

    return register


@pooling(name="avg")
def avg(tasks: torch.Tensor | None, merged: torch.Tensor, lambdas: tuple[float, ...], block: Block, *, seed: int = 0):
    """(1/N) Σn Cn in closed form: (Σt τt + (Σi λi)·M) / (T + K), or mean(Λ)·M for the plain set.

    The closed form is why weaving with avg costs one merge plus one sum over tasks.
    """
    lambda_sum = math.fsum(lambdas)
    if tasks is None:
        return merged * (lambda_sum / len(lambdas))
    pooled = tasks.sum(dim=0)
    pooled.add_(merged, alpha=lambda_sum)
    return pooled.div_(tasks.shape[0] + len(lambdas))


@pooling(name="randmix")
def randmix(
    tasks: torch.Tensor | None, merged: torch.Tensor, lambdas: tuple[float, ...], block: Block, *, seed: int = 0
):
    """Per scalar element, one candidate picked uniformly at random.

    The pick for element i of tensor ``name`` is `uniform_indices` of the stream keyed by
    (seed, "randmix", name) at counter i, a pure function of those: the result does not depend on
    the block size, the device, or the order of tensors in the layout.
    """
    num_tasks = 0 if tasks is None else tasks.shape[0]
    count = num_tasks + len(lambdas)
    pick = random_rows(seed, RANDMIX_LABEL, block, count, merged.device)
    # per candidate n: the weight of M (λ for scaled candidates, 0 for tasks) and whether it is a task
    weight_of_m = torch.tensor([0.0] * num_tasks + list(lambdas), dtype=merged.dtype, device=merged.device)
    values = merged * weight_of_m.index_select(0, pick)
    if tasks is None:
        return values
    is_task = torch.tensor([1.0] * num_tasks + [0.0] * len(lambdas), dtype=merged.dtype, device=merged.device)
    from_tasks = tasks.gather(0, pick.clamp(max=num_tasks - 1).unsqueeze(0)).squeeze(0)
    # exact: a picked task's value plus 0·M, or 0·(some task's value) plus λ·M
    return from_tasks.mul_(is_task.index_select(0, pick)).add_(values)


def _randmix_picked(tasks, merged, lambdas, offset, key, count: int) -> torch.Tensor:
    """`randmix` for one contiguous block, as one fused loop (``count`` <= 128 candidates).

    The same draws as `uniform_indices`, at positions ``offset``, ``offset`` + 1, ...; ``key`` is
    the stream key as `key_words`, ``lambdas`` the grid as a tensor. Picks are selected by
    `select_by_index` (the gather it replaces ran as a scalar loop).
    """
    positions = torch.arange(merged.shape[0], device=merged.device) + offset
    # int32 picks: the selects' bit tests then run on twice as many lanes
    pick = uniform_indices_wide(positions, key, count).to(torch.int32)
    num_tasks = 0 if tasks is None else tasks.shape[0]
    scale = select_by_index([lambdas[i] for i in range(lambdas.shape[0])], pick - num_tasks)
    if tasks is None:
        return merged * scale
    from_task = select_by_index([tasks[t] for t in range(num_tasks)], pick)
    return torch.where(pick < num_tasks, from_task, merged * scale)


randmix_picked = Kernel(_randmix_picked, name="randmix_pooling")


def _compiled_arguments(lambdas: tuple[float, ...], block: Block, seed: int, like: torch.Tensor):
    """The grid, the block's offset and the stream key as tensors, for `randmix_picked`."""
    keys = key_words(stream_key(seed, RANDMIX_LABEL, block.name), like.device)
    grid = torch.tensor(lambdas, dtype=like.dtype, device=like.device)
    offset = torch.tensor(block.offset, dtype=torch.int64, device=like.device)
    return grid, offset, keys


def randmix_compiled(tasks, merged, lambdas: tuple[float, ...], block: Block, *, seed: int = 0) -> torch.Tensor:
    """`randmix` through the compiled `randmix_picked` (same values; see `ww.kernels`)."""
    count = (0 if tasks is None else tasks.shape[0]) + len(lambdas)
    if count > 128 or not isinstance(block, Block):
        return randmix.kernel(tasks, merged, lambdas, block, seed=seed)
    return randmix_picked.compiled(tasks, merged, *_compiled_arguments(lambdas, block, seed, merged), count)


_MERGE_AND_PICK: dict[Kernel, Kernel] = {}


def randmix_fused(
    merge: Kernel,
    params: Mapping[str, object],
    lambdas: tuple[float, ...],
    collaborative: bool,
    seed: int,
    num_params: int,
) -> Callable[[torch.Tensor, Block], torch.Tensor]:
    """`PoolingRecord.fused` for randmix: the merger's block kernel and the pick in one compiled loop.

    Weaving averaging or task arithmetic is bound by memory: pooling in a second kernel reads each
    block again (no longer in L2), so the merge and the pick run in one loop.
    M is the merge kernel's compiled form (for a sum: sequential over tasks, which ATen's eager
    reduction may reorder by an ulp on some block widths); the picks are `randmix_compiled`'s.
    """
    both = _MERGE_AND_PICK.get(merge)
    if both is None:

        def merge_and_pick(tau, grid, offset, key, count: int, collaborative: bool, **params) -> torch.Tensor:
            return _randmix_picked(tau if collaborative else None, merge.fused(tau, **params), grid, offset, key, count)

        both = _MERGE_AND_PICK.setdefault(merge, Kernel(merge_and_pick, name=f"randmix_pooling_{merge.name}"))
    alone = merge.for_params(num_params)
    keys: dict[str, torch.Tensor] = {}  # one stream key (a blake2b) per tensor, not per block
    grids: dict[tuple, torch.Tensor] = {}

    def pool(tau: torch.Tensor, block: Block) -> torch.Tensor:
        count = (tau.shape[0] if collaborative else 0) + len(lambdas)
        if count > 128 or not isinstance(block, Block):
            return randmix.kernel(tau if collaborative else None, alone(tau, **params), lambdas, block, seed=seed)
        key = keys.get(block.name)
        if key is None:  # a benign race: both workers compute the same key
            key = keys[block.name] = key_words(stream_key(seed, RANDMIX_LABEL, block.name), tau.device)
        grid = grids.get((tau.dtype, tau.device))
        if grid is None:
            grid = grids[tau.dtype, tau.device] = torch.tensor(lambdas, dtype=tau.dtype, device=tau.device)
        offset = torch.tensor(block.offset, dtype=torch.int64, device=tau.device)
        return both.compiled(tau, grid, offset, key, count, collaborative, **params)

    return pool


_POOLINGS["randmix"] = dataclasses.replace(randmix, compiled=randmix_compiled, fused=randmix_fused)


@pooling(name="magmax")
def magmax(
    tasks: torch.Tensor | None, merged: torch.Tensor, lambdas: tuple[float, ...], block: Block, *, seed: int = 0
):
    """Per element the candidate of largest |Cn|, ties to the later one.

    Among the scaled candidates the largest |λi·M| is at the last λ of largest |λ| for every
    element, so only that one is compared with the tasks' winner (which comes earlier in order).
    """
    magnitudes = [abs(lam) for lam in lambdas]
    best = max(magnitudes)
    last = len(magnitudes) - 1 - magnitudes[::-1].index(best)
    scaled = merged * lambdas[last]
    if tasks is None:
        return scaled
    winner = largest_magnitude(tasks)
    return choose(at_least(scaled.abs(), winner.abs()), scaled, winner)
