"""ww.spectral: the SVD helpers of TSV-M / Iso-C / Iso-CTS survive LAPACK's fp32 convergence failures.

On ViT-L-14 with 20 tasks, fp32 ``linalg.svd`` failed to converge inside Iso-CTS's polar factor
(nearly dependent concatenated directions). These tests make fp32 SVDs fail on purpose and check
that every path retries in fp64 and still returns the right factors, in the input's dtype.
"""

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
    taus = [{"w": shared + 1e-6 * torch.randn(24, 16, generator=generator), "b": torch.randn(16, generator=generator)}
            for _ in range(6)]
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
