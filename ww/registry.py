"""The merger registry: ``@merger(...)`` turns a plain function into a registered base merger.

A merger is ``f(tau, layout, *, hyper=default, ...) -> M`` where ``tau`` is the flat ``[T, P]``
task-vector matrix (already in its compute dtype), ``layout`` the bank layout (for per-tensor
mergers; global ones ignore it) and ``M`` the flat ``[P]`` merged task vector at λ = 1 (METHODS §2).
The decorator records the name, the citation and the default λ grid (METHODS §1), and derives
hyper-parameter validation from the signature (see `ww.hyperparams`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from .hyperparams import Interval, hyperparameters_of, resolve_hyperparameters
from .lambda_grids import DEFAULT_GRID, LAMBDA_GRIDS
from .layout import Layout
from .names import unknown_name_error
from .precision import to_compute_dtype

MergerFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MergerRecord:
    """A registered merger: its function, citation, default Λ and hyper-parameter defaults."""

    name: str
    function: MergerFunction
    citation: str
    lambdas: tuple[float, ...]
    defaults: Mapping[str, object]
    ranges: Mapping[str, Interval] = field(default_factory=dict)

    def resolve(self, params: Mapping[str, object] | None = None) -> dict[str, object]:
        """Hyper-parameters with defaults filled in; ValueError for unknown names or bad values."""
        return resolve_hyperparameters(self.name, self.defaults, self.ranges, params or {})

    def compute(self, tau: torch.Tensor, layout: Layout, params: Mapping[str, object] | None = None) -> torch.Tensor:
        """M at λ = 1 as a flat ``[P]`` tensor in the compute dtype (fp32 for fp16/bf16 input).

        Never returns memory shared with ``tau``, so callers may hand the result out freely.
        """
        if tau.dim() != 2 or tau.shape[0] < 1:
            raise ValueError(f"{self.name}: expected task vectors [T >= 1, P], got {tuple(tau.shape)}")
        resolved = self.resolve(params)
        work = to_compute_dtype(tau)
        merged = self.function(work, layout, **resolved)
        if merged.shape != (tau.shape[1],):
            raise RuntimeError(f"{self.name} returned shape {tuple(merged.shape)}, expected ({tau.shape[1]},)")
        if merged.numel() and merged.untyped_storage().data_ptr() == tau.untyped_storage().data_ptr():
            merged = merged.clone()
        return merged

    def __call__(self, tau: torch.Tensor, layout: Layout, **params: object) -> torch.Tensor:
        """M at λ = 1 as a flat ``[P]`` tensor in ``tau``'s dtype."""
        return self.compute(tau, layout, params).to(tau.dtype)


_MERGERS: dict[str, MergerRecord] = {}
MERGERS: Mapping[str, MergerRecord] = MappingProxyType(_MERGERS)
"""Merger name -> `MergerRecord`, read-only; extend it with the `merger` decorator."""


def merger(
    *,
    name: str,
    citation: str,
    lambdas: Sequence[float] | None = None,
    ranges: Mapping[str, Interval] | None = None,
) -> Callable[[MergerFunction], MergerFunction]:
    """Register ``f(tau, layout, *, hyper=default, ...)`` as merger ``name``.

    ``lambdas`` defaults to the merger's row of `ww.lambda_grids.LAMBDA_GRIDS` (0.1–1.0 for
    names not in the table); ``ranges`` bounds hyper-parameters by name. Returns ``f`` unchanged.
    """

    def register(function: MergerFunction) -> MergerFunction:
        defaults = hyperparameters_of(function)
        bounds = dict(ranges or {})
        for key in bounds:
            if key not in defaults:
                raise TypeError(f"merger {name!r}: range given for unknown hyper-parameter {key!r}")
        if name in _MERGERS:
            raise ValueError(f"merger {name!r} is already registered")
        grid = tuple(lambdas) if lambdas is not None else LAMBDA_GRIDS.get(name, DEFAULT_GRID)
        _MERGERS[name] = MergerRecord(
            name=name,
            function=function,
            citation=citation,
            lambdas=grid,
            defaults=MappingProxyType(defaults),
            ranges=MappingProxyType(bounds),
        )
        return function

    return register


def get_merger(name: str) -> MergerRecord:
    """The record of merger ``name``; ValueError with the closest registered name otherwise."""
    if not isinstance(name, str) or name not in _MERGERS:
        raise unknown_name_error("merger", name, _MERGERS)
    return _MERGERS[name]


def default_lambdas(merger: str) -> list[float]:
    """The default Weight Weaving search space Λ of ``merger`` (METHODS §1), as a new list.

    Registered mergers report their recorded grid; names of the table that are not implemented yet
    report the table's row. Anything else raises ValueError with the closest known name.
    """
    if isinstance(merger, str) and merger in _MERGERS:
        return list(_MERGERS[merger].lambdas)
    if isinstance(merger, str) and merger in LAMBDA_GRIDS:
        return list(LAMBDA_GRIDS[merger])
    raise unknown_name_error("merger", merger, set(_MERGERS) | set(LAMBDA_GRIDS))
