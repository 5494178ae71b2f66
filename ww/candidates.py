"""The candidate set Weight Weaving pools, without materialising it (docs/METHODS.md §1, steps 3–4).

Collaborative: A* = {τ1..τT} ∪ {λ1·M..λK·M}; plain: A = {λ1·M..λK·M}. The K scaled copies are
never stored: a block of candidate λi·M is formed only when a pooling reads that block, so memory
stays O(P) beyond the bank instead of O((T + K)·P) (docs/DESIGN.md, performance principles).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .engine.streaming import Block, SampledBlock, TaskStream, _SharedState
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

    def task_stream(self, block_entries: int | None = None) -> TaskStream:
        """The task vectors alone (``[0, n]`` blocks for the plain set), aligned with ``merged``."""
        from .engine.streaming import bank_stream

        tasks = self.task_vectors
        if tasks is None:
            tasks = self.merged.new_empty(0, self.merged.shape[0])
        labels = [f"task_{index}" for index in range(tasks.shape[0])]
        return bank_stream(tasks, self.layout, labels, block_entries=block_entries)


def candidate_stream(
    tasks: TaskStream, merged: torch.Tensor, lambdas: tuple[float, ...], collaborative: bool
) -> TaskStream:
    """The candidates as a `TaskStream` of N rows, for a merger used as the pooling function.

    Block b holds the rows of ``tasks`` (when collaborative) followed by λi·M[b] for every λ in Λ's
    order; built per block, so the candidate set never exists whole.
    """
    scale = torch.tensor(lambdas, dtype=merged.dtype, device=merged.device).unsqueeze(1)
    base = tasks.without_finish()
    labels = (base.labels if collaborative else ()) + tuple(f"{lam:g}·M" for lam in lambdas)

    def load(block: Block) -> torch.Tensor:
        scaled = merged[block.start : block.stop].unsqueeze(0) * scale
        if not collaborative:
            return scaled
        return torch.cat([base.read(block), scaled])

    def sample(sampled: SampledBlock) -> torch.Tensor:
        scaled = merged.index_select(0, sampled.flat_positions(merged.device)).unsqueeze(0) * scale
        if not collaborative:
            return scaled
        return torch.cat([base.read_sample(sampled), scaled])

    return replace(
        base,
        loader=load,
        num_tasks=len(labels),
        dtype=merged.dtype,
        labels=labels,
        transform=None,
        check_finite=False,
        in_memory=False,
        sampler=sample if base.sampler is not None else None,
        row_loader=None,
        state=_SharedState(),
    )
