"""The merger registry: ``@merger(...)`` turns a plain function into a registered base merger.

A merger is ``f(tasks, *, hyper=default, ...) -> M`` where ``tasks`` is a `ww.engine.streaming.TaskStream`
over τ1..τT and ``M`` the flat ``[P]`` merged task vector at λ = 1 (docs/METHODS.md §2). Element-wise,
per-row and per-tensor work goes through ``tasks.map(block_function, granularity)``, called once;
global statistics (TIES's top-k thresholds) come from preliminary ``tasks.scan`` passes. The
function never sees where the task vectors live, so one definition serves in-memory banks,
memory-mapped banks and weaving's virtual candidate sets.

The decorator records the name, the citation, the default λ grid (docs/METHODS.md §1) and the revision,
and derives hyper-parameter validation from the signature (see `ww.hyperparams`).

Revisions: a merger's ``revision`` (an int, 1 when first registered) names the version of its
*output*. Bump it in the decorator whenever a change makes the merger return different values for
the same inputs and hyper-parameters — a fix, a changed formula, a changed default, a change in a
shared helper it calls (`ww.engine.blockops`, `ww.engine.selection`, ...) that reaches its result. Pure speed-ups
and refactors that keep every value keep the revision. The benchmark hashes the revision into the
key of every trial that uses the merger (as merger or as pooling), so a bump re-runs exactly those
trials and its result rows record which revision produced them; a merger defined outside ``ww``
(a spec plugin) is keyed by a hash of its module's source instead of relying on this discipline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from .hyperparams import Interval, hyperparameters_of, resolve_hyperparameters
from .lambda_grids import DEFAULT_GRID, LAMBDA_GRIDS
from .names import unknown_name_error

MergerFunction = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MergerRecord:
    """A registered merger: its function, citation, default Λ, hyper-parameter defaults and revision
    (bumped whenever its output changes; see the module docstring)."""

    name: str
    function: MergerFunction
    citation: str
    lambdas: tuple[float, ...]
    defaults: Mapping[str, object]
    ranges: Mapping[str, Interval] = field(default_factory=dict)
    revision: int = 1

    def resolve(self, params: Mapping[str, object] | None = None) -> dict[str, object]:
        """Hyper-parameters with defaults filled in; ValueError for unknown names or bad values."""
        return resolve_hyperparameters(self.name, self.defaults, self.ranges, params or {})

    def run(self, tasks, params: Mapping[str, object] | None = None) -> torch.Tensor:
        """M at λ = 1 of a `TaskStream`, flat ``[P]`` in the stream's compute dtype (a new tensor)."""
        resolved = self.resolve(params)
        merged = self.function(tasks, **resolved)
        if not isinstance(merged, torch.Tensor) or merged.shape != (tasks.num_params,):
            shape = tuple(merged.shape) if isinstance(merged, torch.Tensor) else type(merged).__name__
            raise RuntimeError(f"{self.name} returned {shape}, expected a flat ({tasks.num_params},) tensor")
        return merged

    def __call__(self, task_vectors, **params: object) -> torch.Tensor:
        """M at λ = 1 of a bank (or list/dict of state dicts) as a flat ``[P]`` tensor in its dtype."""
        from . import kernels
        from .bank import as_tasks

        resolved = self.resolve(params)
        tasks = as_tasks(task_vectors)
        with kernels.job(f"merge-{self.name}-T{len(tasks)}", len(tasks) * tasks.num_params):
            return self.run(tasks.stream(), resolved).to(tasks.dtype)


_MERGERS: dict[str, MergerRecord] = {}
MERGERS: Mapping[str, MergerRecord] = MappingProxyType(_MERGERS)
"""Merger name -> `MergerRecord`, read-only; extend it with the `merger` decorator."""


def merger(
    *,
    name: str,
    citation: str,
    lambdas: Sequence[float] | None = None,
    ranges: Mapping[str, Interval] | None = None,
    revision: int = 1,
) -> Callable[[MergerFunction], MergerFunction]:
    """Register ``f(tasks, *, hyper=default, ...)`` as merger ``name``.

    ``lambdas`` defaults to the merger's row of `ww.lambda_grids.LAMBDA_GRIDS` (0.1–1.0 for
    names not in the table); ``ranges`` bounds hyper-parameters by name; ``revision`` is the
    version of the merger's output, bumped whenever it changes (module docstring). Returns ``f``
    unchanged.
    """
    check_revision(f"merger {name!r}", revision)

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
            revision=revision,
        )
        return function

    return register


def check_revision(what: str, revision: object) -> None:
    """TypeError unless ``revision`` is a positive int (a bool is not a revision)."""
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise TypeError(
            f"{what}: revision must be a positive int (1 for a new method, +1 per change of its "
            f"output), got {revision!r}"
        )


def get_merger(name: str) -> MergerRecord:
    """The record of merger ``name``; ValueError with the closest registered name otherwise."""
    if not isinstance(name, str) or name not in _MERGERS:
        raise unknown_name_error("merger", name, _MERGERS)
    return _MERGERS[name]


def default_lambdas(merger: str) -> list[float]:
    """The default Weight Weaving search space Λ of ``merger`` (docs/METHODS.md §1), as a new list.

    Registered mergers report their recorded grid; names of the table that are not implemented yet
    report the table's row. Anything else raises ValueError with the closest known name.
    """
    if isinstance(merger, str) and merger in _MERGERS:
        return list(_MERGERS[merger].lambdas)
    if isinstance(merger, str) and merger in LAMBDA_GRIDS:
        return list(LAMBDA_GRIDS[merger])
    raise unknown_name_error("merger", merger, set(_MERGERS) | set(LAMBDA_GRIDS))


def require_tasks(tasks, minimum: int, merger_name: str, why: str) -> None:
    """ValueError unless the stream has at least ``minimum`` task vectors (checked before any pass)."""
    if tasks.num_tasks < minimum:
        raise ValueError(f"{merger_name} needs at least {minimum} task vectors ({why}), got {tasks.num_tasks}")
