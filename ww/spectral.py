"""Linear algebra shared by the per-matrix mergers TSV-M, Iso-C and Iso-CTS (docs/METHODS.md §2).

These mergers treat every 2-D weight matrix as a linear map and act on its singular value
decomposition; every other tensor (biases, LayerNorm, 4-D convolution kernels) and the CLIP text
projection, which the reference implementations exclude, is merged by averaging.

Precision: the decompositions run in fp64 whatever the bank's dtype (`decomposed`), and only the
merged matrix is rounded back. Real banks are fp32, and these mergers are ill-conditioned exactly
where task vectors are interesting: tasks sharing a dominant low-rank component make the
concatenated singular vectors nearly dependent (the polar factor then amplifies rounding by
1/σmin), and the top triplets taken from the Gram matrix AᵀA lose digits in proportion to the
squared condition number. In fp32 either loses most of the result (docs/METHODS.md §2, "Spectral
mergers", says what is checked); in fp64 the same fast Gram-matrix algorithms stay far below fp32's
own rounding for condition numbers up to about 10⁴ (10⁸ squared, times ε64 ≈ 10⁻¹⁶).
"""

from __future__ import annotations

import torch

EXCLUDED = ("text_projection",)
DECOMPOSITION_DTYPE = torch.float64


def decomposed(tau: torch.Tensor) -> torch.Tensor:
    """``tau`` in the dtype the spectral mergers decompose in (fp64; see the module doc)."""
    return tau.to(DECOMPOSITION_DTYPE)


def is_svd_matrix(name: str, shape: tuple[int, ...]) -> bool:
    """True for the tensors the spectral mergers decompose: 2-D, non-empty, not ``text_projection``."""
    return len(shape) == 2 and min(shape) > 0 and not any(part in name for part in EXCLUDED)


def thin_svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, S, Vh of ``matrix`` (``[..., m, n]``), thin; decomposes the transpose of wide matrices.

    LAPACK's divide and conquer is several times slower on wide than on tall inputs of the same
    size, and SVD(Aᵀ) = V S Uᵀ gives the same factors. When it fails to converge (it can on fp32
    matrices with many repeated singular values, e.g. after a projection), the decomposition is
    redone in fp64.
    """
    if matrix.shape[-2] < matrix.shape[-1]:
        u, s, vh = thin_svd(matrix.mT)
        return vh.mT, s, u.mT
    try:
        return torch.linalg.svd(matrix, full_matrices=False)
    except torch.linalg.LinAlgError:
        if matrix.dtype == torch.float64:
            raise
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        return u.to(matrix.dtype), s.to(matrix.dtype), vh.to(matrix.dtype)


def top_singular(matrix: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``count`` largest singular triplets U ``[..., m, c]``, S ``[..., c]``, Vh ``[..., c, n]``.

    TSV-M and Iso-CTS keep only r/T directions per task. For those, the eigendecomposition of the
    small Gram matrix AᵀA (``eigh``, after one matrix product) gives V and S² several times faster
    than a full SVD, and U = A V / S; the kept values have relative accuracy about ε·(σ1/σc)²,
    which is why callers pass fp64 matrices (`decomposed`). When more than half the spectrum is
    wanted (few tasks), the full SVD is used instead.
    """
    rows, columns = matrix.shape[-2:]
    rank = min(rows, columns)
    if count > rank // 2:
        u, s, vh = thin_svd(matrix)
        return u[..., :count], s[..., :count], vh[..., :count, :]
    if rows < columns:
        u, s, vh = top_singular(matrix.mT, count)
        return vh.mT, s, u.mT
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix.mT @ matrix)
    v = eigenvectors[..., -count:].flip(-1)
    s = eigenvalues[..., -count:].flip(-1).clamp(min=0).sqrt()
    u = (matrix @ v) / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(-2)
    return u, s, v.mT


def polar_factor(matrix: torch.Tensor) -> torch.Tensor:
    """The orthonormal polar factor P Qᵀ of ``matrix`` = P Σ Qᵀ (the nearest matrix with
    orthonormal columns, or rows if wide): how TSV-M and Iso-CTS orthogonalise concatenated
    singular vectors.

    For the nearly orthonormal inputs of those mergers the factor is computed as
    A (AᵀA)^-1/2 from a small eigendecomposition, equal to P Qᵀ whenever A has full rank and several
    times cheaper than a second SVD; a rank-deficient or ill-conditioned input, where the inverse
    square root is unstable, falls back to the SVD (`thin_svd`, so fp64 when fp32 fails: Iso-CTS
    on ViT-L-14 with 20 tasks concatenates nearly dependent directions, where fp32 LAPACK failed).
    """
    tall = matrix.shape[-2] >= matrix.shape[-1]
    a = matrix if tall else matrix.mT
    if a.shape[-1] == 0:
        return matrix.clone()
    gram = a.mT @ a
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    smallest, largest = eigenvalues[..., :1], eigenvalues[..., -1:]
    if bool((smallest > largest * 1e-6).all()) and bool((largest > 0).all()):
        inverse_root = (eigenvectors * eigenvalues.rsqrt().unsqueeze(-2)) @ eigenvectors.mT
        factor = a @ inverse_root
    else:
        p, _, qh = thin_svd(a)
        factor = p @ qh
    return factor if tall else factor.mT


def combine_rank(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    """U diag(s) Vh."""
    return (u * s.unsqueeze(-2)) @ vh


def projected_top_singular(
    matrix: torch.Tensor, basis: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`top_singular` of (I − B Bᵀ) A for matrices A ``[T, m, n]`` and an orthonormal basis B
    ``[m, c]``, without forming the projected matrices.

    Iso-CTS needs each task's top directions outside the common subspace. Tall A: the Gram matrix
    of the projection is AᵀA − (BᵀA)ᵀ(BᵀA); wide A: (I − BBᵀ) AAᵀ (I − BBᵀ). Either costs about half
    the arithmetic of projecting A first. Falls back to the explicit projection when more than half
    the spectrum is wanted.
    """
    rows, columns = matrix.shape[-2:]
    if count > min(rows, columns) // 2:
        return top_singular(matrix - basis @ (basis.mT @ matrix), count)
    if rows >= columns:
        inside = basis.mT @ matrix  # [T, c, n]
        eigenvalues, eigenvectors = torch.linalg.eigh(matrix.mT @ matrix - inside.mT @ inside)
        v = eigenvectors[..., -count:].flip(-1)
        s = eigenvalues[..., -count:].flip(-1).clamp(min=0).sqrt()
        u = (matrix @ v - basis @ (inside @ v)) / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(-2)
        return u, s, v.mT
    outer = matrix @ matrix.mT  # [T, m, m]
    projector = torch.eye(rows, dtype=matrix.dtype, device=matrix.device) - basis @ basis.mT
    eigenvalues, eigenvectors = torch.linalg.eigh(projector @ outer @ projector)
    u = eigenvectors[..., -count:].flip(-1)
    s = eigenvalues[..., -count:].flip(-1).clamp(min=0).sqrt()
    vh = (u.mT @ matrix) / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(-1)
    return u, s, vh
