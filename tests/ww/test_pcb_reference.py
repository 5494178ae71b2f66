"""PCB in every form ww runs it equals the Weight Weaving authors' PCB, written here from its description.

The reference follows docs/METHODS.md ("PCB"), per task t over the whole flattened vector:
clamp |τt| to its 1 %/99 % quantiles (sorted positions ⌊0.01·P⌋ and ⌊0.99·P⌋ − 1, ascending), signs
kept; min-max normalised magnitudes m_t and n_t = sign(τt)·m_t; β_t = exp(T·m_t²) ⊙ Σj tanh(n_t ⊙ n_j);
q_t = the ⌈ratio·P⌉-th largest β_t; s_t = (max(β_t, q_t) − q_t) / (max β_t − q_t);
M = Σt s_t ⊙ τ̃t / max(Σt s_t, 1e-12). Plain torch in fp64 on the same (fp32) numbers: a sort per
quantile, a double loop over task pairs, no selection machinery, no kernels, no cache.
"""

import math
from fractions import Fraction

import pytest
import torch

import ww
from ww import kernels
from ww.mergers import pcb as pcb_module

LAYOUT = [("visual.blocks.0.weight", (200, 300)), ("visual.blocks.0.bias", (300,)), ("visual.proj", (100, 250))]
TOLERANCE = 1e-5


def ref_pcb(rows: torch.Tensor, ratio: float = 0.05, rescale: bool = True) -> torch.Tensor:
    """The authors' PCB of ``[T, P]`` fp64 task vectors (``rescale=False``: the kept raw β as
    weights instead, ww's PCB before it followed the authors)."""
    num_tasks, total = rows.shape
    clamped = torch.empty_like(rows)
    signed = torch.empty_like(rows)
    magnitude = torch.empty_like(rows)
    for t in range(num_tasks):
        ordered = rows[t].abs().sort().values
        low, high = ordered[total // 100], ordered[max(99 * total // 100 - 1, 0)]
        kept = rows[t].abs().clamp(low, high)
        clamped[t] = rows[t].sign() * kept
        magnitude[t] = (kept - low) / (high - low) if high > low else torch.zeros_like(kept)
        signed[t] = rows[t].sign() * magnitude[t]
    keep = math.ceil(Fraction(repr(ratio)) * total)
    weights = torch.empty_like(rows)
    for t in range(num_tasks):
        intra = torch.exp(num_tasks * magnitude[t] ** 2)
        inter = sum(torch.tanh(signed[t] * signed[j]) for j in range(num_tasks))
        scores = intra * inter
        threshold = scores.sort(descending=True).values[keep - 1]
        if rescale:
            weights[t] = (torch.maximum(scores, threshold) - threshold) / (scores.max() - threshold)
        else:
            weights[t] = torch.where((scores >= threshold) & (scores > 0), scores, torch.zeros_like(scores))
    return (weights * clamped).sum(0) / weights.sum(0).clamp(min=1e-12)


def heavy_tailed_bank(num_tasks=5, seed=0, dtype=torch.float32) -> ww.TaskVectorBank:
    """fp32 task vectors with a shared component and heavy tails (so the 1 %/99 % clamp bites);
    85 k entries per task, above the direct-selection size (the sampled-bracket selection runs)."""
    generator = torch.Generator().manual_seed(seed)
    total = sum(math.prod(shape) for _, shape in LAYOUT)
    shared = torch.randn(total, generator=generator, dtype=torch.float64)
    rows = []
    for _ in range(num_tasks):
        own = torch.randn(total, generator=generator, dtype=torch.float64)
        spread = torch.exp(torch.randn(total, generator=generator, dtype=torch.float64))
        rows.append(((0.6 * shared + own) * spread * 1e-3).to(dtype))
    return ww.TaskVectorBank.from_flat(torch.stack(rows), LAYOUT)


def relative_errors(merged: dict, expected: torch.Tensor, bank: ww.TaskVectorBank) -> dict:
    """Per tensor: max |merged − expected| / max |expected|."""
    reference = bank.unflatten(expected)
    return {
        name: float((merged[name].double() - reference[name]).abs().max() / reference[name].abs().max())
        for name in reference
    }


def _assert_close(merged, bank, ratio=0.05):
    assert all(value.dtype == bank.data.dtype for value in merged.values())
    errors = relative_errors(merged, ref_pcb(bank.data.double(), ratio), bank)
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_eager_pcb_on_fp32_matches_the_authors_reference(ratio):
    bank = heavy_tailed_bank()
    with kernels.use("eager"):
        _assert_close(ww.merge("pcb", bank, ratio=ratio), bank, ratio)


def test_pcb_small_bank_direct_selection_and_fp64_match_the_reference():
    bank = heavy_tailed_bank(num_tasks=3, seed=1, dtype=torch.float64)
    small = ww.TaskVectorBank.from_flat(bank.data[:, :30_000].contiguous(), [("w", (100, 300))])
    expected = ref_pcb(small.data)
    torch.testing.assert_close(ww.merge("pcb", small)["w"].reshape(-1), expected, rtol=1e-9, atol=1e-15)
    _assert_close(ww.merge("pcb", bank), bank)


def test_pcb_streamed_from_a_memory_mapped_bank_matches_the_reference(tmp_path):
    bank = heavy_tailed_bank(seed=2)
    ww.save_bank(tmp_path / "bank.safetensors", bank)
    mapped = ww.open_bank(tmp_path / "bank.safetensors")
    _assert_close(ww.merge("pcb", mapped), bank)
    in_memory = ww.merge("pcb", bank)
    on_disk = ww.merge("pcb", mapped)
    assert all(torch.equal(on_disk[name], in_memory[name]) for name in in_memory)


def test_pcb_inside_weaving_is_the_same_merge():
    """Weaving does not cache β (its T + 3 bound) and merges in its pooling pass: one λ = 1 and no
    task vectors in the pool leave exactly M."""
    bank = heavy_tailed_bank(seed=3)
    woven = ww.weave(bank, "pcb", lambdas=[1.0], pooling="avg", collaborative=False)
    _assert_close(woven, bank)


@pytest.mark.skipif(not kernels.compiler_available(), reason="no C++ compiler for inductor")
def test_compiled_pcb_matches_the_reference_and_really_ran_compiled():
    bank = heavy_tailed_bank(seed=4)
    with kernels.use("compiled"):
        merged = ww.merge("pcb", bank)
    for kernel in (pcb_module.balance_scores, pcb_module.pcb_block):
        assert kernel._compiled is not None and kernel.failure is None, kernel.name
    _assert_close(merged, bank)


def test_entries_at_the_threshold_weigh_nothing_and_the_largest_score_weighs_one():
    # P = 4, ratio 0.5: two entries kept per task. τ1 = [4, 3, 2, 1]: clamp to [1, 3] (positions 0
    # and 2), m1 = [1, 1, 0.5, 0]; τ2 = [1, 1, 1, 1]: m2 = 0, inter-balance of τ1 = tanh(m1²)
    # (τ2's n is 0), β1 = e^(2m²)·tanh(m²) = [e²tanh1, e²tanh1, e^0.5·tanh0.25, 0]; the 2nd largest
    # is the maximum: every kept entry weighs 1 (no range to rescale). τ2: β2 = e^0·0 = 0 everywhere:
    # q = max = 0, its four entries weigh 1. M = (τ̃1·s1 + τ̃2·s2) / (s1 + s2).
    taus = [
        {"w": torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)},
        {"w": torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)},
    ]
    merged = ww.merge("pcb", taus, ratio=0.5)["w"]
    torch.testing.assert_close(merged, torch.tensor([2.0, 2.0, 1.0, 1.0], dtype=torch.float64))
    # three distinct kept scores: the one at the threshold weighs 0, the top one 1, the middle one between
    rows = torch.tensor(
        [
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125] * 10,
            [0.5, -0.25, 1.0, 2.0, -1.0, 0.125, 3.0, -0.5, 1.0, 0.75] * 10,
        ],
        dtype=torch.float64,
    )
    merged = ww.merge("pcb", [{"w": row} for row in rows], ratio=0.3)["w"]
    torch.testing.assert_close(merged, ref_pcb(rows, 0.3), rtol=1e-12, atol=1e-15)


def test_the_reference_tells_min_max_weights_from_raw_scores():
    """Guards the test's premise: with raw β as weights M moves by far more than the tolerance."""
    rows = heavy_tailed_bank(num_tasks=3, seed=5).data.double()
    authors, raw = ref_pcb(rows), ref_pcb(rows, rescale=False)
    assert float((authors - raw).abs().max() / authors.abs().max()) > 100 * TOLERANCE
