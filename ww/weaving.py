"""Weight Weaving: pool the λ-scaled candidates of one merge instead of choosing λ (METHODS §1).

Chaves, Valle, Avila, "Weight Weaving: Parameter Pooling for Data-Free Model Merging", UniReps @
NeurIPS 2025, arXiv 2510.13921, Algorithm 1: M = f_merge(τ1..τT) once at λ = 1; candidates
A = {λi·M : λi ∈ Λ}, or A* = {τ1..τT} ∪ A when collaborative (the paper's default); the merged
model is θ0 + f_pool(candidates) with no further scaling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .bank import as_bank
from .candidates import Candidates
from .names import unknown_name_error
from .pooling import POOLINGS
from .precision import to_compute_dtype
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
    its default hyper-parameters. ``seed`` drives randmix. ``merger_params`` go to the base merger.
    All arguments are validated before the merge; the inputs are never modified.
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

    bank = as_bank(task_vectors)
    merged = record.compute(bank.data, bank.layout, merger_params)
    candidates = Candidates(
        task_vectors=to_compute_dtype(bank.data) if collaborative else None,
        merged=merged,
        lambdas=grid,
        layout=bank.layout,
    )
    if pooling in POOLINGS:
        pooled = POOLINGS[pooling](candidates, seed=seed)
    else:
        pooled = get_merger(pooling).compute(candidates.materialise(), bank.layout)
    return bank.unflatten(pooled.to(bank.data.dtype))


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
