"""Iso-C and Iso-CTS: isotropic merging in the common (and task-specific) subspaces (docs/METHODS.md §2).

Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and Task-Specific
Subspaces", ICML 2025, arXiv 2502.04959. Task arithmetic's sum Δ = Σt τt is dominated by a few
directions; flattening its spectrum (every singular value replaced by their mean) lets the tasks
that live in weaker directions through. Per 2-D matrix (not ``text_projection``); other tensors
take the mean of τt.

Checked against a plain fp64 SVD of the definitions in docs/METHODS.md §2 ("Spectral mergers") on fp32
inputs, ill-conditioned ones included (tests/ww/test_spectral.py): Δ is summed and
decomposed in fp64 (`ww.spectral.decomposed`), only M is rounded to the bank's dtype.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..engine.streaming import Block, TaskStream
from ..hyperparams import Interval
from ..registry import merger
from ..spectral import decomposed, is_svd_matrix, polar_factor, projected_top_singular, thin_svd
from .tsv_m import _TaskMatrices, task_mean


def task_sum(tau, shape: tuple[int, ...]) -> torch.Tensor:
    """Δ = Σt τt in fp64 as an ``[m, n]`` matrix, accumulated one task at a time (never stacked)."""
    total = decomposed(tau[0]).reshape(shape).clone()
    for task in range(1, len(tau)):
        total += decomposed(tau[task]).reshape(shape)
    return total


def iso_c_block(tau, block: Block) -> torch.Tensor:
    """Iso-C of one whole tensor: Δ = Σt τt = U diag(σ) Vᵀ  ->  M = mean(σ)·U Vᵀ."""
    if not is_svd_matrix(block.name, block.shape):
        return task_mean(tau)
    u, s, vh = thin_svd(task_sum(tau, block.shape))
    return (u @ vh).mul_(s.mean()).reshape(-1).to(tau.dtype)


def subspace_sizes(rank: int, num_tasks: int, common_fraction: float) -> tuple[int, int]:
    """(common directions, directions per task) for a matrix of rank ``rank``, as the authors do:
    start from ⌊fraction·r⌋ common directions and give the rest to the tasks in equal shares,
    round((r − common)/T) each (Python's rounding), taking the remainder back into the common
    space; shares are capped at ⌊r/T⌋ so the total never exceeds r."""
    common = math.floor(Fraction(repr(float(common_fraction))) * rank)
    per_task = min(round((rank - common) / num_tasks), rank // num_tasks)
    return rank - per_task * num_tasks, per_task


def iso_cts_block(tau, block: Block, common_fraction: float) -> torch.Tensor:
    """Iso-CTS of one whole tensor given as ``[T, numel]`` (or `TaskRows`), one task at a time.

    Common subspace: the top directions of Δ = Σt τt. Task-specific subspaces: the top directions
    of each τt after projecting out the common left singular vectors. The concatenated bases are
    orthogonalised (polar factors) and every direction gets the same weight, the mean of all the
    concatenated singular values.
    """
    if not is_svd_matrix(block.name, block.shape):
        return task_mean(tau)
    num_tasks = len(tau)
    rows, columns = block.shape
    matrices = _TaskMatrices(tau, block.shape)
    common, per_task = subspace_sizes(min(rows, columns), num_tasks, common_fraction)
    u, s, vh = thin_svd(task_sum(tau, block.shape))
    u_common, s_common, vh_common = u[:, :common], s[:common], vh[:common]
    u_all = u_common.new_empty(rows, num_tasks * per_task + common)
    s_all = s_common.new_empty(num_tasks * per_task + common)
    vh_all = vh_common.new_empty(num_tasks * per_task + common, columns)
    for task in range(num_tasks if per_task else 0):  # each task's top directions outside the common space
        kept = slice(task * per_task, (task + 1) * per_task)
        u_all[:, kept], s_all[kept], vh_all[kept] = projected_top_singular(matrices[task], u_common, per_task)
    u_all[:, num_tasks * per_task :], s_all[num_tasks * per_task :], vh_all[num_tasks * per_task :] = (
        u_common,
        s_common,
        vh_common,
    )
    del u, vh, u_common, vh_common  # copied into the concatenation: free the decomposition of Δ
    u_all = polar_factor(u_all)
    return (u_all @ polar_factor(vh_all)).mul_(s_all.mean()).reshape(-1).to(tau.dtype)


@merger(
    name="iso_c",
    revision=2,  # 2: spectra from an fp64 decomposition on fp32 banks
    citation="Marczak et al., No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces, ICML 2025, arXiv 2502.04959 (Iso-C)",
)
def iso_c(tasks: TaskStream) -> torch.Tensor:
    """Per matrix: the polar factor of Σt τt scaled by the mean singular value (a flat spectrum)."""
    return tasks.map(iso_c_block, granularity="tensors", by_task=True)


@merger(
    name="iso_cts",
    revision=2,  # 2: spectra from an fp64 decomposition on fp32 banks
    citation="Marczak et al., No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces, ICML 2025, arXiv 2502.04959 (Iso-CTS)",
    ranges={"common_fraction": Interval(0.0, 1.0, low_closed=True)},
)
def iso_cts(tasks: TaskStream, *, common_fraction: float = 0.8) -> torch.Tensor:
    """Per matrix: ⌊0.8·r⌋ (adjusted) common directions plus each task's own, isotropically weighted."""
    return tasks.map(lambda tau, block: iso_cts_block(tau, block, common_fraction), granularity="tensors", by_task=True)
