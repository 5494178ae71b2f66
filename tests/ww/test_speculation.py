"""One-pass TIES/DARE-TIES on resident banks (`ww.engine.speculation`): bit-identical to the two-pass path.

The two-pass path (exact thresholds by selection, then the merge) is what memory-mapped banks run;
these tests compare against it with the same compiled kernels, so any difference is a bug of the
speculation (a missed column, a wrong threshold), not rounding.
"""

from __future__ import annotations

import pytest
import torch

import ww
from tests.ww.test_kernels import _bank, _compiled_code_really_ran, needs_compiler  # noqa: F401 (autouse)
from ww import kernels
from ww.engine import speculation

pytestmark = needs_compiler


@pytest.fixture
def two_pass(monkeypatch):
    """Run a callable with speculation switched off."""

    def run(function):
        with monkeypatch.context() as patch:
            patch.setattr(speculation, "applies", lambda tasks: False)
            return function()

    return run


@pytest.fixture
def redone(monkeypatch):
    """Records, per `_redo` call, how many columns were merged again and how many of them changed."""
    calls = []
    original = speculation._redo

    def spy(tasks, out, columns, exact, thresholds):
        positions = torch.cat([block.flat_positions() for block in columns.blocks])
        before = out[positions].clone()
        original(tasks, out, columns, exact, thresholds)
        calls.append((positions.numel(), int((out[positions] != before).sum())))

    monkeypatch.setattr(speculation, "_redo", spy)
    return calls


def _assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].dtype == expected[name].dtype
        assert torch.equal(got[name], expected[name]), name


@pytest.mark.parametrize("merger", ["ties", "dare_ties"])
def test_one_pass_equals_two_pass_and_corrects_the_uncertain_columns(merger, two_pass, redone):
    bank = _bank(num_tasks=4, generator_seed=3)
    with kernels.use("compiled"):
        got = ww.merge(merger, bank)
        expected = two_pass(lambda: ww.merge(merger, bank))
    _assert_same(got, expected)
    # the fix-up ran, on a small share of the columns, and changed some speculative values
    ((columns, changed),) = redone
    assert 0 < columns < bank.data.shape[1] // 4  # a 7 k-entry sample here: wide brackets
    assert changed > 0


def test_one_pass_keeps_every_entry_tied_with_the_threshold(two_pass):
    bank = _bank(num_tasks=4, generator_seed=4)
    bank.data.mul_(4000).round_().div_(4000)  # magnitudes on a coarse grid: many equal the threshold
    with kernels.use("compiled"):
        got = ww.merge("ties", bank, k=0.3)
        expected = two_pass(lambda: ww.merge("ties", bank, k=0.3))
    _assert_same(got, expected)
    with kernels.use("eager"):
        eager = ww.merge("ties", bank, k=0.3)
    for name in eager:
        torch.testing.assert_close(got[name], eager[name], rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("merger", "pooling"), [("ties", "avg"), ("ties", "randmix"), ("ties", "magmax"), ("dare_ties", "randmix")]
)
def test_weaving_pools_the_corrected_columns_too(merger, pooling, two_pass, redone):
    bank = _bank(num_tasks=3, generator_seed=6)
    with kernels.use("compiled"):
        got = ww.weave(bank, merger, pooling=pooling, seed=5)
        expected = two_pass(lambda: ww.weave(bank, merger, pooling=pooling, seed=5))
    _assert_same(got, expected)
    assert redone and redone[0][1] > 0


@pytest.mark.parametrize(("merger", "side"), [("ties", "high"), ("ties", "low"), ("dare_ties", "high")])
def test_a_missed_bracket_falls_back_to_exact_selection(merger, side, monkeypatch, two_pass, redone):
    bank = _bank(num_tasks=4, generator_seed=7)
    original = speculation.sample_brackets

    def missing(*args, **kwargs):
        lows, highs, widest = original(*args, **kwargs)
        if side == "high":  # bracket entirely below the threshold of task 2: too many at or above high
            lows[2], highs[2] = lows[2] * 0.5, lows[2] * 0.6
        else:  # entirely above it: too few at or above low
            lows[2], highs[2] = highs[2] * 1.5, highs[2] * 1.6
        return lows, highs, widest

    selected = []
    exact_selection = speculation.kth_largest
    monkeypatch.setattr(speculation, "sample_brackets", missing)
    monkeypatch.setattr(speculation, "kth_largest", lambda *a, **k: selected.append(1) or exact_selection(*a, **k))
    with kernels.use("compiled"):
        got = ww.merge(merger, bank)
    monkeypatch.setattr(speculation, "sample_brackets", original)
    with kernels.use("compiled"):
        expected = two_pass(lambda: ww.merge(merger, bank))
    _assert_same(got, expected)
    assert selected == [1]
    assert redone[0][1] > 0  # task 2's decisions moved by a whole bracket: many columns changed


def test_half_precision_banks_are_merged_in_fp32_and_returned_in_their_dtype(two_pass):
    bank = _bank(num_tasks=3, generator_seed=8)
    half = ww.TaskVectorBank.from_flat(bank.data.half(), bank.layout)
    with kernels.use("compiled"):
        got = ww.merge("ties", half)
        expected = two_pass(lambda: ww.merge("ties", half))
    _assert_same(got, expected)
    assert next(iter(got.values())).dtype == torch.float16


def test_pcb_keeps_the_two_pass_path_since_its_weights_depend_on_the_threshold_value(monkeypatch):
    """PCB's min-max rescaled weights (β − q)/(max β − q) change in every kept column with q."""
    bank = _bank(num_tasks=3, generator_seed=2)
    calls = []
    original = speculation.top_k_map
    monkeypatch.setattr(speculation, "top_k_map", lambda *a, **k: calls.append(1) or original(*a, **k))
    with kernels.use("compiled"):
        compiled = ww.merge("pcb", bank)
    with kernels.use("eager"):
        eager = ww.merge("pcb", bank)
    assert calls == []
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-9)


def test_eager_kernels_and_memory_mapped_banks_keep_the_two_pass_path(tmp_path, monkeypatch):
    bank = _bank(num_tasks=3, generator_seed=2)
    calls = []
    original = speculation.top_k_map
    monkeypatch.setattr(speculation, "top_k_map", lambda *a, **k: calls.append(1) or original(*a, **k))
    with kernels.use("eager"):
        ww.merge("ties", bank)
    ww.save_bank(tmp_path / "bank.safetensors", bank)
    with kernels.use("compiled"):
        ww.merge("ties", ww.open_bank(tmp_path / "bank.safetensors"))
    assert calls == []
    with kernels.use("compiled"):
        ww.merge("ties", bank)
    assert calls == [1]
