"""TSV-M: Task Singular Vectors merging (docs/METHODS.md §2).

Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model Merging", CVPR 2025,
arXiv 2412.00081. For every 2-D weight matrix (not ``text_projection``): SVD each task's τt, keep
its top ⌊r/T⌋ singular triplets (r = min dimension) so the T low-rank pieces fill at most r
directions, concatenate the U's, S's and V's, replace the concatenated U and V by their orthonormal
polar factors (removing the interference between tasks' subspaces, `ww.spectral.polar_factor`) and
rebuild M = U⊥ diag(S) V⊥ᵀ. Other tensors: the mean of τt. With more tasks than r, ⌊r/T⌋ = 0 and
the matrix contributes 0 (as in the authors' code, where every selected block is empty).

Checked against a plain fp64 SVD of the definition in docs/METHODS.md §2 ("Spectral mergers") on fp32
inputs, ill-conditioned ones included (tests/ww/test_spectral.py): the decompositions run
in fp64 (`ww.spectral.decomposed`), only M is rounded to the bank's dtype.
"""

from __future__ import annotations

import torch

from ..engine.streaming import Block, TaskStream
from ..registry import merger
from ..spectral import decomposed, is_svd_matrix, polar_factor, top_singular


def tsv_factors(matrices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U⊥, S, V⊥ᵀ) of TSV-M for T task matrices ``[m, n]`` (a ``[T, m, n]`` tensor, or any sequence
    of matrices): M = U⊥ diag(S) V⊥ᵀ.

    U⊥ has orthonormal columns and V⊥ᵀ orthonormal rows (T·⌊r/T⌋ of them, possibly none). Computed
    and returned in the matrices' dtype: callers pass fp64 (`ww.spectral.decomposed`). The tasks
    are decomposed one at a time and only their kept triplets are retained, so a sequence that
    produces each matrix when indexed never holds more than one whole task matrix.
    """
    num_tasks = len(matrices)
    first = matrices[0]
    rows, columns = first.shape[-2:]
    per_task = min(rows, columns) // num_tasks
    if per_task == 0:
        empty = first.new_zeros
        return empty(rows, 0), empty(0), empty(0, columns)
    u = first.new_empty(rows, num_tasks * per_task)
    s = first.new_empty(num_tasks * per_task)
    vh = first.new_empty(num_tasks * per_task, columns)
    for task in range(num_tasks):
        kept = slice(task * per_task, (task + 1) * per_task)
        u[:, kept], s[kept], vh[kept] = top_singular(first if task == 0 else matrices[task], per_task)
        first = None
    u = polar_factor(u)
    return u, s, polar_factor(vh)


class _TaskMatrices:
    """Task t's block as an fp64 ``[m, n]`` matrix, made when indexed (`tsv_factors`, Iso-CTS)."""

    def __init__(self, tau, shape: tuple[int, ...]) -> None:
        self.tau = tau
        self.shape = shape

    def __len__(self) -> int:
        return len(self.tau)

    def __getitem__(self, task: int) -> torch.Tensor:
        return decomposed(self.tau[task]).reshape(self.shape)


def task_mean(tau) -> torch.Tensor:
    """The mean over tasks of a ``[T, n]`` block or a `TaskRows`."""
    return tau.mean(dim=0) if isinstance(tau, torch.Tensor) else tau.mean()


def tsv_block(tau, block: Block) -> torch.Tensor:
    """TSV-M of one whole tensor given as ``[T, numel]`` (or `TaskRows`), decomposed in fp64 task by
    task, returned in ``tau``'s dtype."""
    if not is_svd_matrix(block.name, block.shape):
        return task_mean(tau)
    u, s, vh = tsv_factors(_TaskMatrices(tau, block.shape))
    return (u.mul_(s.unsqueeze(-2)) @ vh).reshape(-1).to(tau.dtype)  # `combine_rank`, scaling U in place


@merger(
    name="tsv_m",
    revision=2,  # 2: triplets from an fp64 decomposition (fp32 banks were off by up to 1e-2)
    citation="Gargiulo et al., Task Singular Vectors: Reducing Task Interference in Model Merging, "
    "CVPR 2025, arXiv 2412.00081",
)
def tsv_m(tasks: TaskStream) -> torch.Tensor:
    """Per matrix: the top ⌊r/T⌋ singular triplets of every task, orthogonalised and recombined."""
    return tasks.map(tsv_block, granularity="tensors", by_task=True)
