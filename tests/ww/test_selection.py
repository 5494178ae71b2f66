"""ww.engine.selection: exact r-th largest values of streamed blocks, by sampling brackets or radix passes."""

import dataclasses

import pytest
import torch

import ww
from ww.engine import selection
from ww.engine.streaming import SampledBlock, sample_blocks
from ww.mergers.dare import dropped


def _bank(values):
    return ww.TaskVectorBank.from_flat(
        values, [("a", (values.shape[1] // 3,)), ("b", (values.shape[1] - values.shape[1] // 3,))]
    )


def _expected(values, ranks):
    ordered = values.sort(dim=1, descending=True).values
    return torch.stack([ordered[row, ranks[row] - 1] for row in range(values.shape[0])])


CASES = {
    "signed fp32": lambda g: torch.randn(3, 90_001, generator=g) * torch.linspace(0.1, 3, 90_001),
    "fp64": lambda g: torch.randn(2, 80_000, generator=g, dtype=torch.float64),
    "many ties": lambda g: torch.randint(-3, 4, (3, 80_000), generator=g).float(),
    "mostly zeros": lambda g: torch.randn(2, 80_000, generator=g) * (torch.rand(2, 80_000, generator=g) < 0.05),
}


def _stream(values, sampling, **kwargs):
    """A stream sampled at scattered positions (resident banks) or in windows (memory-mapped ones)."""
    stream = _bank(values).stream(**kwargs)
    return stream if sampling == "scattered" else dataclasses.replace(stream, sampler=None)


@pytest.mark.parametrize("path", ["scattered sample", "windowed sample", "radix"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kth_largest_is_exact(case, path, monkeypatch):
    values = CASES[case](torch.Generator().manual_seed(0))
    if path == "radix":
        monkeypatch.setattr(selection, "_bracketed", lambda *args: None)
    sampling = path.split()[0]
    total = values.shape[1]
    ranks = torch.tensor([[1, 7, total // 5, total - 3, total]] * values.shape[0])
    found = selection.kth_largest(_stream(values, sampling, workers=2), lambda tau, block: tau, ranks)
    assert torch.equal(found, _expected(values, ranks))
    magnitudes = selection.kth_largest(_stream(values, sampling), lambda tau, block: tau.abs(), ranks, nonnegative=True)
    assert torch.equal(magnitudes, _expected(values.abs(), ranks))


@pytest.mark.parametrize("sampling", ["scattered", "windowed"])
def test_a_biased_sample_falls_back_to_the_exact_radix_path(sampling, monkeypatch):
    values = torch.cat([torch.zeros(2, 100_000), torch.rand(2, 100_000) + 1], dim=1)
    # sample only the zeros: the bracket cannot hold the 20 %-largest, the counts say so
    monkeypatch.setattr(
        selection, "_sample_windows", lambda tasks, granularity: ([selection.Block("a", (66_666,), 0, 1000, 0)], 32)
    )
    monkeypatch.setattr(
        selection, "sample_blocks", lambda layout, count: [SampledBlock("a", (66_666,), 0, torch.arange(1000))]
    )
    calls = []
    radix = selection._radix
    monkeypatch.setattr(selection, "_radix", lambda *args: calls.append(1) or radix(*args))
    ranks = torch.tensor([[40_000], [40_000]])
    found = selection.kth_largest(_stream(values, sampling), lambda tau, block: tau, ranks)
    assert calls and torch.equal(found, _expected(values, ranks))


def test_scattered_samples_are_independent_and_narrow_the_bracket(monkeypatch):
    """Rows of very different scale: windows share a row's scale, scattered entries do not."""
    generator = torch.Generator().manual_seed(3)
    scales = torch.rand(1, 400, generator=generator).pow(4).repeat_interleave(1000, dim=1)
    values = torch.randn(2, 400_000, generator=generator) * scales
    calls = []
    kthvalue = torch.kthvalue

    def spy(input, k, *args, **kwargs):  # the final selection runs on the collected bracket
        calls.append(input.numel())
        return kthvalue(input, k, *args, **kwargs)

    monkeypatch.setattr(selection.torch, "kthvalue", spy)
    ranks = torch.tensor([[80_000], [80_000]])
    sizes = {}
    for sampling in ("scattered", "windowed"):
        calls.clear()
        found = selection.kth_largest(_stream(values, sampling), lambda tau, block: tau.abs(), ranks, nonnegative=True)
        assert torch.equal(found, _expected(values.abs(), ranks))
        sizes[sampling] = calls[-1]  # the last call selects inside the last bracket
    assert sizes["scattered"] * 3 < sizes["windowed"]


def test_sampled_entries_match_a_full_pass_through_a_transform():
    """DARE draws by position: a scattered sample must see the values a full pass sees."""
    values = torch.randn(3, 5_000, generator=torch.Generator().manual_seed(1))
    layout = [("a", (50, 40)), ("b", (3_000,))]
    stream = dropped(ww.TaskVectorBank.from_flat(values, layout).stream(), 0.5, seed=7)
    full = torch.cat([stream.read(block) for block in stream.blocks()], dim=1)
    for sampled in sample_blocks(layout, 600, seed=2):
        assert torch.equal(stream.read_sample(sampled), full[:, sampled.flat_positions()])
    memory_mapped = dataclasses.replace(stream, sampler=None)
    with pytest.raises(ValueError, match="no sampler"):
        memory_mapped.read_sample(sample_blocks(layout, 10)[0])


def test_ranks_are_validated():
    stream = _bank(torch.zeros(2, 9)).stream()
    with pytest.raises(ValueError, match=r"ranks must lie in \[1, 9\]"):
        selection.kth_largest(stream, lambda tau, block: tau, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"ranks must be \[T=2, R\]"):
        selection.kth_largest(stream, lambda tau, block: tau, torch.tensor([1, 1]))


def test_many_tiny_tensors_fall_back_to_windows_when_no_tensor_gets_a_sample():
    """Every tensor's proportional share of the scattered sample rounds to 0 here."""
    values = torch.randn(2, 70_000, generator=torch.Generator().manual_seed(4))
    layout = [(f"t{index}", (7,)) for index in range(10_000)]
    assert sample_blocks(layout, 70_000 // 16) == []
    stream = ww.TaskVectorBank.from_flat(values, layout).stream()
    ranks = torch.tensor([[14_000], [14_000]])
    found = selection.kth_largest(stream, lambda tau, block: tau.abs(), ranks, nonnegative=True)
    assert torch.equal(found, _expected(values.abs(), ranks))
