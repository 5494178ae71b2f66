"""Weight Weaving: pool the λ-scaled candidates of one merge instead of choosing λ (docs/METHODS.md §1).

Chaves, Valle, Avila, "Weight Weaving: Parameter Pooling for Data-Free Model Merging", UniReps @
NeurIPS 2025, arXiv 2510.13921, Algorithm 1: M = f_merge(τ1..τT) once at λ = 1; candidates
A = {λi·M : λi ∈ Λ}, or A* = {τ1..τT} ∪ A when collaborative (the paper's default); the merged
model is θ0 + f_pool(candidates) with no further scaling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from . import kernels
from .bank import as_tasks
from .candidates import Candidates, candidate_stream
from .engine.counter_rng import stream_key
from .engine.streaming import Block, TaskStream
from .names import unknown_name_error
from .pooling import POOLINGS, PoolingRecord
from .registry import MERGERS, default_lambdas, get_merger


def weave(
    task_vectors,
    merger: str,
    lambdas: Sequence[float] | None = None,
    pooling: str = "avg",
    collaborative: bool = True,
    seed: int = 0,
    merger_params: Mapping[str, object] | None = None,
) -> dict[str, torch.Tensor]:
    """The pooled task vector to ADD to θ0, as a state dict in the task vectors' dtype.

    ``lambdas`` defaults to ``default_lambdas(merger)``. ``pooling`` is a name of `ww.POOLINGS`
    ("avg", "randmix", "magmax") or of any registered merger, which then pools the candidates with
    its default hyper-parameters, except that a random one (with a ``seed``: randmix, DARE) gets
    `pooling_seed` (``seed``). ``seed`` drives randmix pooling. ``merger_params`` go to the base merger.
    All arguments are validated before the merge; the inputs are never modified.

    Memory: the output plus bounded block temporaries beyond the inputs (plus M itself when a
    merger pools), whatever K is; state dicts are read in place (no stacked copy), and a bank from
    `ww.open_bank` is woven out-of-core. Whether kernels compile: `ww.kernels`.
    """
    record = get_merger(merger)
    if merger_params is not None and not isinstance(merger_params, Mapping):
        raise ValueError(f"merger_params must be a dict or None, got {type(merger_params).__name__}")
    record.resolve(merger_params)
    grid = check_lambdas(default_lambdas(merger) if lambdas is None else lambdas)
    if not isinstance(pooling, str) or (pooling not in POOLINGS and pooling not in MERGERS):
        raise unknown_name_error("pooling", pooling, set(POOLINGS) | set(MERGERS))
    if not isinstance(collaborative, bool):
        raise ValueError(f"collaborative must be True or False, got {collaborative!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")

    source = as_tasks(task_vectors)
    tasks = source.stream()
    label = f"weave-{merger}-{pooling}-{'collaborative' if collaborative else 'plain'}-T{len(source)}"
    with kernels.job(label, len(source) * source.num_params):
        if pooling in POOLINGS:
            pooled = _fused(record, merger_params, tasks, POOLINGS[pooling], grid, collaborative, seed)
        else:
            merged = record.run(tasks, merger_params)
            candidates = candidate_stream(tasks, merged, grid, collaborative)
            pool_record = get_merger(pooling)
            pool_params = {"seed": pooling_seed(seed)} if "seed" in pool_record.defaults else None
            pooled = pool_record.run(candidates, pool_params)
    return source.unflatten(pooled.to(source.dtype))


def pooling_seed(seed: int) -> int:
    """The seed a random merger used as pooling runs with in a weave of seed ``seed``.

    Derived rather than ``seed`` itself: with the same seed, DARE as pooling would drop from the
    candidates τ1..τT exactly the entries DARE as the base merger dropped from them (its draws are
    keyed by seed, tensor and row), coupling two draws the method treats as independent."""
    return stream_key(seed, "merger-as-pooling") >> 33


def _fused(record, merger_params, tasks: TaskStream, pool: PoolingRecord, grid, collaborative: bool, seed: int):
    """Merge and pool in the merger's final pass: each block of M is pooled while the block of
    task vectors it came from is still in cache, so weaving costs the merge plus O(T) work per
    entry, never K scaled copies and never a second read of the bank. A merger that is one
    block kernel (`TaskStream.map_kernel`) and a pooling with a fused form (randmix) share one
    compiled loop."""

    kernel = pool.for_params(tasks.num_params)

    def finish(block: Block, merged: torch.Tensor) -> torch.Tensor:
        rows = tasks.read_raw(block) if collaborative else None
        return kernel(rows, merged, grid, block, seed=seed)

    fuse = None
    if pool.fused is not None and kernels.compiled_for(tasks.num_params):

        def fuse(merge, params):
            return pool.fused(merge, params, grid, collaborative, seed, tasks.num_params)

    fused = tasks.derive(finish=finish, fuse=fuse)
    before = fused.state.final_maps
    result = record.run(fused, merger_params)
    maps = fused.state.final_maps - before
    if maps == 1:
        return result
    if maps == 0:  # a merger that did not produce M through `map`: pool in a separate pass
        candidates = Candidates(tasks.read_all() if collaborative else None, result, grid, tasks.layout)
        return pool(candidates, seed=seed)
    raise RuntimeError(f"merger {record.name!r} called TaskStream.map {maps} times; a merger must call it once")


def check_lambdas(lambdas: Sequence[float]) -> tuple[float, ...]:
    """Λ as a tuple of floats; ValueError unless it is a non-empty sequence of finite numbers."""
    if isinstance(lambdas, (str, bytes)) or not isinstance(lambdas, Sequence):
        raise ValueError(f"lambdas must be a list of numbers, got {type(lambdas).__name__}")
    if not lambdas:
        raise ValueError("lambdas must not be empty: Weight Weaving needs at least one λ")
    for lam in lambdas:
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam):
            raise ValueError(f"every λ must be a finite number, got {lam!r} in {list(lambdas)}")
    return tuple(float(lam) for lam in lambdas)
