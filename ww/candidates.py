"""The candidate set Weight Weaving pools, without materialising it (METHODS §1, steps 3–4).

Collaborative: A* = {τ1..τT} ∪ {λ1·M..λK·M}; plain: A = {λ1·M..λK·M}. The K scaled copies are
never stored: a candidate λi·M is formed only when a pooling asks for it, so memory stays O(T·P)
instead of O((T + K)·P) (DESIGN.md, performance principles).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .layout import Layout


@dataclass(frozen=True)
class Candidates:
    """Candidates in pooling order: τ1..τT (collaborative only), then λ1·M..λK·M in Λ's order.

    ``task_vectors`` is the ``[T, P]`` matrix, or None for the plain (non-collaborative) set;
    ``merged`` is M at λ = 1, flat ``[P]``, in the same dtype. Neither is ever written to.
    """

    task_vectors: torch.Tensor | None
    merged: torch.Tensor
    lambdas: tuple[float, ...]
    layout: Layout

    @property
    def num_tasks(self) -> int:
        """T if the task vectors take part (collaborative), else 0."""
        return 0 if self.task_vectors is None else self.task_vectors.shape[0]

    def __len__(self) -> int:
        """N = T + K collaborative, K plain."""
        return self.num_tasks + len(self.lambdas)

    def scaled(self, lam: float) -> torch.Tensor:
        """The candidate λ·M (a new tensor)."""
        return self.merged * lam

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Each candidate in order, one at a time."""
        if self.task_vectors is not None:
            yield from self.task_vectors
        for lam in self.lambdas:
            yield self.scaled(lam)

    def materialise(self) -> torch.Tensor:
        """All N candidates stacked ``[N, P]``, for poolings that need them at once (merger pooling)."""
        return torch.stack(list(self))
