"""ww.spectral and the spectral mergers (TSV-M, Iso-C, Iso-CTS): fp32 failures, then accuracy.

The SVD helpers survive LAPACK's fp32 convergence failures: on ViT-L-14 with 20 tasks, fp32
``linalg.svd`` failed to converge inside Iso-CTS's polar factor (nearly dependent concatenated
directions). The first tests make fp32 SVDs fail on purpose and check that every path retries in
fp64 and still returns the right factors, in the input's dtype.

Accuracy: TSV-M, Iso-C and Iso-CTS on fp32 task vectors agree with an fp64 SVD reference to 1e-5.
Real banks are fp32. The references follow docs/METHODS.md §2 (spectral mergers) with plain
``torch.linalg.svd`` in float64 on the same fp32 numbers upcast, so what is compared is ww's
arithmetic alone. The inputs are the ones where squaring the condition number (an eigendecomposition
of AᵀA in fp32) loses digits: tasks sharing a dominant low-rank component, repeated singular values,
residuals of low rank after the common subspace is projected out, wide and tall matrices. Each
input keeps a gap at every cut the mergers make (top ⌊r/T⌋ of a task, the common subspace), so the
exact result is unique and an error can only come from the arithmetic.
"""

import math

import pytest
import torch

import ww
from ww import spectral

REAL_SVD = torch.linalg.svd


def _failing_fp32_svd(calls):
    def svd(matrix, *args, **kwargs):
        calls.append(matrix.dtype)
        if matrix.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge (forced by the test)")
        return REAL_SVD(matrix, *args, **kwargs)

    return svd


def test_thin_svd_retries_in_fp64_when_fp32_fails(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.linalg, "svd", _failing_fp32_svd(calls))
    matrix = torch.randn(40, 25, generator=torch.Generator().manual_seed(0))
    for shaped in (matrix, matrix.T):  # tall and wide
        u, s, vh = spectral.thin_svd(shaped)
        assert u.dtype == s.dtype == vh.dtype == torch.float32
        torch.testing.assert_close((u * s) @ vh, shaped, rtol=1e-5, atol=1e-5)
    assert calls == [torch.float32, torch.float64] * 2


def test_polar_factor_of_a_rank_deficient_matrix_falls_back_to_an_fp64_svd(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    # rank 3 out of 6 columns: the inverse square root is unstable, the SVD path is taken
    matrix = torch.randn(30, 3, generator=generator) @ torch.randn(3, 6, generator=generator)
    calls = []
    monkeypatch.setattr(torch.linalg, "svd", _failing_fp32_svd(calls))
    factor = spectral.polar_factor(matrix)
    assert calls == [torch.float32, torch.float64]
    assert factor.dtype == torch.float32
    monkeypatch.setattr(torch.linalg, "svd", REAL_SVD)
    p, _, qh = torch.linalg.svd(matrix.double(), full_matrices=False)
    torch.testing.assert_close(factor, (p @ qh).float(), rtol=1e-4, atol=1e-4)


def test_iso_cts_completes_with_nearly_dependent_task_directions(monkeypatch):
    """Tasks that share their top directions make the concatenated basis rank-deficient."""
    generator = torch.Generator().manual_seed(2)
    shared = torch.randn(24, 2, generator=generator) @ torch.randn(2, 16, generator=generator)
    taus = [
        {"w": shared + 1e-6 * torch.randn(24, 16, generator=generator), "b": torch.randn(16, generator=generator)}
        for _ in range(6)
    ]
    calls = []
    monkeypatch.setattr(torch.linalg, "svd", _failing_fp32_svd(calls))
    merged = ww.merge("iso_cts", taus)
    assert torch.float64 in calls  # a decomposition failed in fp32 and was redone in fp64
    assert merged["w"].dtype == torch.float32 and torch.isfinite(merged["w"]).all()
    # the polar factors of a (nearly) dependent basis are not unique, but the result is still
    # isotropic: every singular value equals the mean of the concatenated spectrum
    singular = torch.linalg.svdvals(merged["w"].double())
    assert float(singular.max() - singular.min()) <= 1e-4 * float(singular.mean())
    torch.testing.assert_close(merged["b"], torch.stack([tau["b"] for tau in taus]).mean(0))


@pytest.mark.parametrize("name", ["tsv_m", "iso_c"])
def test_other_spectral_mergers_survive_fp32_failures(name, monkeypatch):
    generator = torch.Generator().manual_seed(3)
    taus = [{"w": torch.randn(20, 12, generator=generator)} for _ in range(3)]
    expected = ww.merge(name, [{"w": tau["w"].double()} for tau in taus])
    monkeypatch.setattr(torch.linalg, "svd", _failing_fp32_svd([]))
    merged = ww.merge(name, taus)
    torch.testing.assert_close(merged["w"], expected["w"].float(), rtol=1e-4, atol=1e-5)


# accuracy against an fp64 SVD reference

F64 = torch.float64
TOLERANCE = 1e-5


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got − expected| / max |expected|, over one tensor."""
    return float((got.double() - expected).abs().max() / expected.abs().max())


def _polar(matrix):
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


def ref_tsv_m(taus):
    per_task = min(taus[0].shape) // len(taus)
    us, ss, vhs = [], [], []
    for tau in taus:
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        us.append(u[:, :per_task]), ss.append(s[:per_task]), vhs.append(vh[:per_task])
    return _polar(torch.cat(us, 1)) @ torch.diag(torch.cat(ss)) @ _polar(torch.cat(vhs, 0))


def ref_iso_c(taus):
    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    return s.mean() * u @ vh


def ref_iso_cts(taus, common_fraction=0.8):
    rank, tasks = min(taus[0].shape), len(taus)
    common = int(rank * common_fraction)
    per_task = min(round((rank - common) / tasks), rank // tasks)
    common = rank - per_task * tasks
    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    basis = u[:, :common]
    us, ss, vhs = [basis], [s[:common]], [vh[:common]]
    for tau in taus:
        ut, st, vht = torch.linalg.svd(tau - basis @ (basis.T @ tau), full_matrices=False)
        us.append(ut[:, :per_task]), ss.append(st[:per_task]), vhs.append(vht[:per_task])
    return torch.cat(ss).mean() * _polar(torch.cat(us, 1)) @ _polar(torch.cat(vhs, 0))


REFERENCES = {"tsv_m": ref_tsv_m, "iso_c": ref_iso_c, "iso_cts": ref_iso_cts}


def reference(name, taus):
    return REFERENCES[name]([tau.double() for tau in taus])


def _orthonormal(rows, columns, generator):
    return torch.linalg.qr(torch.randn(rows, columns, generator=generator, dtype=F64)).Q


def random_square():
    """Five random 64×64 tasks (where Iso-CTS from fp32 Gram matrices was 2.7e-3 off)."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(64, 64, generator=generator) for _ in range(5)]


def shared_low_rank(rows=64, columns=48, tasks=8, scale=1e-3):
    """A dominant rank-2 component shared by every task plus small task-specific noise: each task's
    top directions nearly coincide, so the concatenated U and V are nearly dependent."""
    generator = torch.Generator().manual_seed(1)
    shared = (
        _orthonormal(rows, 2, generator)
        @ torch.diag(torch.tensor([40.0, 25.0], dtype=F64))
        @ _orthonormal(columns, 2, generator).T
    )
    return [(shared + scale * torch.randn(rows, columns, generator=generator, dtype=F64)).float() for _ in range(tasks)]


def shared_low_rank_wide():
    return [tau.T.contiguous() for tau in shared_low_rank()]


def repeated_common_spectrum(rows=64, columns=32, tasks=4):
    """Tasks in one pair of bases: a repeated common spectrum (100 on 24 directions, Iso-CTS's
    common subspace) and, per task, two directions of its own (0.5) in the other 8: Δ has a
    24-fold repeated singular value and each task's residual outside the common subspace has rank 2."""
    generator = torch.Generator().manual_seed(2)
    left, right = _orthonormal(rows, columns, generator), _orthonormal(columns, columns, generator)
    taus = []
    for task in range(tasks):
        spectrum = torch.zeros(columns, dtype=F64)
        spectrum[:24] = 100.0
        spectrum[24 + 2 * task] = 0.5
        spectrum[25 + 2 * task] = 0.4
        taus.append((left @ torch.diag(spectrum) @ right.T).float())
    return taus


def repeated_task_spectrum(rows=64, columns=32, tasks=4):
    """Each task's kept spectrum (⌊32/4⌋ = 8 directions) is two 4-fold repeated values, 6 and 3,
    above a tail below 0.3; a shared rank-1 component of 40 on top. TSV-M's cut falls in a gap,
    the repeated blocks inside the kept directions (their bases are arbitrary, the result is not)."""
    generator = torch.Generator().manual_seed(4)
    shared = _orthonormal(rows, 1, generator) @ _orthonormal(columns, 1, generator).T * 40.0
    spectrum = torch.cat(
        [torch.full((4,), 6.0), torch.full((4,), 3.0), torch.linspace(0.3, 0.01, columns - 8)]
    ).double()
    return [
        (
            shared
            + _orthonormal(rows, columns, generator)
            @ torch.diag(spectrum)
            @ _orthonormal(columns, columns, generator).T
        ).float()
        for _ in range(tasks)
    ]


def low_rank_tasks(rows=48, columns=64, tasks=4, rank=14):
    """Tasks of rank 14 (> ⌊48/4⌋ = 12 kept) sharing a strong component: rank-deficient matrices
    whose Gram matrices have a large null space."""
    generator = torch.Generator().manual_seed(3)
    shared = _orthonormal(rows, 1, generator) @ _orthonormal(columns, 1, generator).T * 30.0
    taus = []
    for _ in range(tasks):
        spectrum = torch.linspace(1.0, 0.05, rank, dtype=F64)
        own = _orthonormal(rows, rank, generator) @ torch.diag(spectrum) @ _orthonormal(columns, rank, generator).T
        taus.append((shared + own).float())
    return taus


ALL = ("tsv_m", "iso_c", "iso_cts")
CASES = {  # input -> the mergers for which it has a unique answer
    "random_square": (random_square, ALL),
    "shared_low_rank": (shared_low_rank, ALL),
    "shared_low_rank_wide": (shared_low_rank_wide, ALL),
    "repeated_task_spectrum": (repeated_task_spectrum, ALL),
    # TSV-M would cut each task inside the 24-fold repeated block: no unique answer
    "repeated_common_spectrum": (repeated_common_spectrum, ("iso_c", "iso_cts")),
    "low_rank_tasks": (low_rank_tasks, ALL),
}
PAIRS = [(name, case) for case, (_, names) in sorted(CASES.items()) for name in names]


@pytest.mark.parametrize("name, case", PAIRS)
def test_fp32_spectral_merge_matches_the_fp64_svd_reference(name, case):
    taus = CASES[case][0]()
    assert all(tau.dtype == torch.float32 for tau in taus)
    merged = ww.merge(name, [{"w": tau, "b": tau[0]} for tau in taus])
    assert merged["w"].dtype == torch.float32
    error = relative_error(merged["w"], reference(name, taus))
    assert error <= TOLERANCE, f"{name} on {case}: {error:.2e} relative to the fp64 SVD reference"
    torch.testing.assert_close(merged["b"], torch.stack([tau[0] for tau in taus]).mean(0))


def test_the_inputs_are_ill_conditioned_where_it_matters():
    """Guards the test's own premise: the shared-component inputs square to Gram matrices whose
    condition number is far beyond fp32's 1/ε, so an fp32 eigendecomposition cannot resolve them."""
    tau = shared_low_rank()[0].double()
    singular = torch.linalg.svdvals(tau)
    per_task = min(tau.shape) // 8
    assert float(singular[0] / singular[per_task - 1]) ** 2 > 1e6
    spectrum = torch.linalg.svdvals(sum(t.double() for t in repeated_common_spectrum()))
    assert math.isclose(float(spectrum[0]), float(spectrum[23]), rel_tol=1e-6)  # repeated
