"""ww.selection: exact r-th largest values of streamed blocks, by sampling brackets or radix passes."""

import pytest
import torch

import ww
from ww import selection


def _bank(values):
    return ww.TaskVectorBank.from_flat(values, [("a", (values.shape[1] // 3,)), ("b", (values.shape[1] - values.shape[1] // 3,))])


def _expected(values, ranks):
    ordered = values.sort(dim=1, descending=True).values
    return torch.stack([ordered[row, ranks[row] - 1] for row in range(values.shape[0])])


CASES = {
    "signed fp32": lambda g: torch.randn(3, 90_001, generator=g) * torch.linspace(0.1, 3, 90_001),
    "fp64": lambda g: torch.randn(2, 80_000, generator=g, dtype=torch.float64),
    "many ties": lambda g: torch.randint(-3, 4, (3, 80_000), generator=g).float(),
    "mostly zeros": lambda g: torch.randn(2, 80_000, generator=g) * (torch.rand(2, 80_000, generator=g) < 0.05),
}


@pytest.mark.parametrize("path", ["bracket", "radix"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kth_largest_is_exact(case, path, monkeypatch):
    values = CASES[case](torch.Generator().manual_seed(0))
    if path == "radix":
        monkeypatch.setattr(selection, "_bracketed", lambda *args: None)
    total = values.shape[1]
    ranks = torch.tensor([[1, 7, total // 5, total - 3, total]] * values.shape[0])
    found = selection.kth_largest(_bank(values).stream(workers=2), lambda tau, block: tau, ranks)
    assert torch.equal(found, _expected(values, ranks))
    magnitudes = selection.kth_largest(_bank(values).stream(), lambda tau, block: tau.abs(), ranks, nonnegative=True)
    assert torch.equal(magnitudes, _expected(values.abs(), ranks))


def test_a_biased_sample_falls_back_to_the_exact_radix_path(monkeypatch):
    values = torch.cat([torch.zeros(2, 100_000), torch.rand(2, 100_000) + 1], dim=1)
    # sample only the zeros: the bracket cannot hold the 20 %-largest, the counts say so
    monkeypatch.setattr(selection, "_sample_windows", lambda tasks, granularity: (
        [selection.Block("a", (66_666,), 0, 1000, 0)], 32))
    calls = []
    radix = selection._radix
    monkeypatch.setattr(selection, "_radix", lambda *args: calls.append(1) or radix(*args))
    ranks = torch.tensor([[40_000], [40_000]])
    found = selection.kth_largest(_bank(values).stream(), lambda tau, block: tau, ranks)
    assert calls and torch.equal(found, _expected(values, ranks))


def test_ranks_are_validated():
    stream = _bank(torch.zeros(2, 9)).stream()
    with pytest.raises(ValueError, match=r"ranks must lie in \[1, 9\]"):
        selection.kth_largest(stream, lambda tau, block: tau, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"ranks must be \[T=2, R\]"):
        selection.kth_largest(stream, lambda tau, block: tau, torch.tensor([1, 1]))
