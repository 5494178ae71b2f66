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
from ..spectral import combine_rank, decomposed, is_svd_matrix, polar_factor, top_singular


def tsv_factors(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U⊥, S, V⊥ᵀ) of TSV-M for task matrices ``[T, m, n]``: M = U⊥ diag(S) V⊥ᵀ.

    U⊥ has orthonormal columns and V⊥ᵀ orthonormal rows (T·⌊r/T⌋ of them, possibly none). Computed
    and returned in the dtype of ``matrices``: callers pass fp64 (`ww.spectral.decomposed`).
    """
    num_tasks, rows, columns = matrices.shape
    per_task = min(rows, columns) // num_tasks
    if per_task == 0:
        empty = matrices.new_zeros
        return empty(rows, 0), empty(0), empty(0, columns)
    u, s, vh = top_singular(matrices, per_task)
    u = u.permute(1, 0, 2).reshape(rows, num_tasks * per_task)
    vh = vh.reshape(num_tasks * per_task, columns)
    return polar_factor(u), s.reshape(-1), polar_factor(vh)


def tsv_block(tau: torch.Tensor, block: Block) -> torch.Tensor:
    """TSV-M of one whole tensor given as ``[T, numel]``, decomposed in fp64, returned in ``tau``'s dtype."""
    if not is_svd_matrix(block.name, block.shape):
        return tau.mean(dim=0)
    u, s, vh = tsv_factors(decomposed(tau).reshape(tau.shape[0], *block.shape))
    return combine_rank(u, s, vh).reshape(-1).to(tau.dtype)


@merger(
    name="tsv_m",
    revision=2,  # 2: triplets from an fp64 decomposition (fp32 banks were off by up to 1e-2)
    citation="Gargiulo et al., Task Singular Vectors: Reducing Task Interference in Model Merging, "
    "CVPR 2025, arXiv 2412.00081",
)
def tsv_m(tasks: TaskStream) -> torch.Tensor:
    """Per matrix: the top ⌊r/T⌋ singular triplets of every task, orthogonalised and recombined."""
    return tasks.map(tsv_block, granularity="tensors")
