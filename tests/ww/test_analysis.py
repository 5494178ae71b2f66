"""`ww.analysis` (METHODS §4) on hand-computed cases: geometry, increments, interference."""

import math

import pytest
import torch

import ww
from ww import analysis

F64 = torch.float64


def _bank(*rows, layout=None, dtype=F64):
    """A bank whose row t is task vector t, split into tensors by ``layout`` (name -> shape)."""
    layout = layout or {"v": (len(rows[0]),)}
    data = torch.tensor(rows, dtype=dtype)
    return ww.TaskVectorBank.from_flat(data, list(layout.items()), [f"t{i}" for i in range(len(rows))])


# ---------------------------------------------------------------- geometry


def test_orthogonal_task_vectors_have_cosine_zero_and_unit_diagonal():
    cos = analysis.cosine_matrix(_bank([1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -3.0]))
    assert cos.dtype == F64
    torch.testing.assert_close(cos, torch.eye(3, dtype=F64))


def test_cosine_of_hand_computed_pairs():
    # (1,1)·(1,0) = 1, norms √2 and 1 -> 1/√2; (1,1)·(-1,-1) -> -1
    cos = analysis.cosine_matrix(_bank([1.0, 1.0], [1.0, 0.0], [-1.0, -1.0]))
    assert cos[0, 1].item() == pytest.approx(1 / math.sqrt(2))
    assert cos[0, 2].item() == pytest.approx(-1.0)
    assert cos[1, 2].item() == pytest.approx(-1 / math.sqrt(2))
    torch.testing.assert_close(cos, cos.T)


def test_per_tensor_and_per_block_cosines_split_the_whole_inner_product():
    layout = {
        "class_embedding": (1,),
        "proj": (1,),
        "conv1.weight": (2,),
        "transformer.resblocks.0.attn.in_proj_weight": (2,),
        "transformer.resblocks.1.mlp.c_fc.weight": (2,),
        "ln_post.weight": (1,),
    }
    # task 0 and 1 agree in block 0, are opposite in block 1, orthogonal in the embedding
    first = [1.0, 2.0, 1.0, 0.0, 1.0, 1.0, 3.0, 0.0, 1.0]
    second = [0.0, 2.0, 0.0, 5.0, 2.0, 2.0, -3.0, 0.0, 0.0]
    grams = analysis.gram_matrices(_bank(first, second, layout=layout))
    assert list(grams.per_group) == ["embed", "block 0", "block 1", "head"]
    cos = {label: analysis.cosine_from_gram(gram)[0, 1].item() for label, gram in grams.per_group.items()}
    assert cos["block 0"] == pytest.approx(1.0)
    assert cos["block 1"] == pytest.approx(-1.0)
    assert cos["embed"] == pytest.approx(0.0)
    # head = proj (2·2) + ln_post (1·0): "proj" is head although open_clip lists it before the blocks
    assert grams.per_group["head"][0, 1].item() == pytest.approx(4.0)
    assert grams.whole[0, 1].item() == pytest.approx(sum(a * b for a, b in zip(first, second)))
    torch.testing.assert_close(sum(grams.per_tensor.values()), grams.whole)
    assert math.isnan(analysis.cosine_from_gram(grams.per_tensor["class_embedding"])[0, 1].item())  # a zero vector


def test_block_of_names_blocks_embeddings_and_heads():
    assert analysis.block_of("transformer.resblocks.11.mlp.c_proj.bias") == "block 11"
    assert analysis.block_of("blocks.2.attn.qkv.weight") == "block 2"
    assert analysis.block_of("conv1.weight") == "embed"
    assert analysis.block_of("positional_embedding") == "embed"
    assert analysis.block_of("ln_post.bias") == "head"
    assert analysis.block_of("proj") == "head"


def test_gram_is_exact_float64_and_independent_of_streaming_blocks():
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(3, 700_001, generator=generator)  # several streaming blocks per task
    bank = ww.TaskVectorBank.from_flat(data, [("a", (500_000,)), ("b", (200_001,))])
    reference = data.double() @ data.double().T
    torch.testing.assert_close(analysis.gram_matrices(bank).whole, reference, rtol=1e-12, atol=1e-9)


def test_orthogonal_equal_increments_give_the_sqrt_s_over_t_baseline():
    # θs − θs−1 = e_s (orthogonal, equal norms): τs = e_1 + ... + e_s
    count = 5
    increments = torch.eye(count, dtype=F64) * 0.3
    cumulative = increments.cumsum(dim=0)
    bank = ww.TaskVectorBank.from_flat(cumulative, [("v", (count,))])
    baseline = analysis.sqrt_ratio_baseline(count)
    assert baseline[1, 3].item() == pytest.approx(math.sqrt(2 / 4))
    assert baseline[0, 4].item() == pytest.approx(math.sqrt(1 / 5))
    torch.testing.assert_close(analysis.cosine_matrix(bank), baseline)
    torch.testing.assert_close(analysis.increment_cosines(bank), torch.eye(count, dtype=F64))


def test_increment_cosines_recover_correlated_increments():
    # increments δ1 = (1, 0), δ2 = (1, 1): cos = 1/√2 although τ2 = (2, 1)
    bank = _bank([1.0, 0.0], [2.0, 1.0])
    assert analysis.increment_cosines(bank)[0, 1].item() == pytest.approx(1 / math.sqrt(2))
    assert analysis.cosine_matrix(bank)[0, 1].item() == pytest.approx(2 / math.sqrt(5))


def test_mean_off_diagonal_ignores_the_diagonal_and_nans():
    matrix = torch.tensor([[1.0, 0.2, float("nan")], [0.2, 1.0, 0.4], [float("nan"), 0.4, 1.0]], dtype=F64)
    assert analysis.mean_off_diagonal(matrix) == pytest.approx(0.3)


# ---------------------------------------------------------------- interference


def test_sign_conflicts_on_a_hand_computed_case():
    # k = 0.5 of P = 4: each task keeps its 2 largest |τ|
    # t0 keeps entries 0 (+), 1 (+); t1 keeps 0 (−), 2 (+); t2 keeps 0 (+), 1 (−)
    bank = _bank([4.0, 3.0, 0.1, 0.0], [-5.0, 0.0, 2.0, 1.0], [1.0, -2.0, 0.0, 0.5])
    result = analysis.sign_conflicts(bank, k=0.5)
    assert result.kept.tolist() == [2, 2, 2]
    assert result.both.tolist() == [[2, 1, 2], [1, 2, 1], [2, 1, 2]]
    assert result.disagree.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    rate = result.pairwise_rate
    assert rate[0, 1].item() == 1.0 and rate[0, 2].item() == 0.5 and rate[1, 2].item() == 1.0
    # union {0, 1, 2}; kept by ≥ 2 tasks: {0, 1}; both have a + and a − kept entry
    assert (result.union, result.shared, result.conflicting) == (3, 2, 2)
    assert result.rate == 1.0 and result.rate_of_union == pytest.approx(2 / 3)


def test_sign_conflicts_keep_ties_at_the_threshold_and_ignore_zeros():
    # k = 0.25 of P = 4 -> 1 entry, but t0 ties twice at 2 (both kept); t1 is all zero (keeps nothing)
    bank = _bank([2.0, -2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    result = analysis.sign_conflicts(bank, k=0.25)
    assert result.kept.tolist() == [2, 0]
    assert (result.union, result.shared, result.conflicting) == (2, 0, 0)
    assert math.isnan(result.rate) and math.isnan(result.pairwise_rate[0, 1].item())


def test_sign_conflicts_of_independent_random_signs_are_about_one_half():
    generator = torch.Generator().manual_seed(1)
    result = analysis.sign_conflicts(
        ww.TaskVectorBank.from_flat(torch.randn(2, 200_000, generator=generator), [("v", (200_000,))]), k=0.2
    )
    assert result.pairwise_rate[0, 1].item() == pytest.approx(0.5, abs=0.02)


def test_magmax_shares_count_winners_with_ties_to_the_later_task():
    # winners per entry: t1, t0, t2 (tie |3| = |−3| goes to the later task), t2; the all-zero entry is not counted
    bank = _bank([1.0, 5.0, 3.0, 0.0, 0.0], [2.0, -1.0, 0.0, 0.0, 0.0], [0.5, 0.0, -3.0, 0.1, 0.0])
    shares = analysis.selection_shares(bank)
    assert shares.counted == 4
    assert shares.magmax.tolist() == [1, 1, 2]
    torch.testing.assert_close(shares.magmax_share, torch.tensor([0.25, 0.25, 0.5], dtype=F64))


def test_randmix_shares_are_the_draws_the_randmix_merger_makes():
    count, size = 3, 30_000
    # task t holds t + 1 everywhere, so the merged value names the task it was drawn from
    data = torch.arange(1, count + 1, dtype=F64).unsqueeze(1).expand(count, size).contiguous()
    bank = ww.TaskVectorBank.from_flat(data, [("a", (10_000,)), ("b", (20_000,))])
    merged = torch.cat([v.reshape(-1) for v in ww.merge("randmix", bank, seed=7).values()])
    shares = analysis.selection_shares(bank, seed=7)
    assert shares.randmix.tolist() == [int((merged == t + 1).sum()) for t in range(count)]
    assert shares.randmix_share.tolist() == pytest.approx([1 / 3] * 3, abs=0.01)
    assert analysis.selection_shares(bank, seed=8).randmix.tolist() != shares.randmix.tolist()


def test_consensus_histogram_counts_the_tall_mask_users_of_each_entry():
    # τMTL = [3, 1.7, 5.2, 1.9]; users per entry (λ = 0.4): 3, 1 (only t0), 1 (only t2), 2 (t0, t1)
    bank = _bank([1.0, 2.0, 0.1, 1.0], [1.0, -0.5, 0.1, 1.0], [1.0, 0.2, 5.0, -0.1])
    histogram = analysis.consensus_histogram(bank)
    assert histogram.users.tolist() == [0, 2, 1, 1]
    assert (histogram.unused, histogram.selfish, histogram.shared) == (0, 2, 2)
    assert histogram.per_task.tolist() == [3, 2, 2]
    # the entries consensus (k = 2) keeps are exactly the shared ones
    kept = torch.cat([v.reshape(-1) for v in ww.merge("consensus", bank).values()]) != 0
    assert int(kept.sum()) == histogram.shared


def test_analyses_accept_a_list_of_state_dicts():
    taus = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 1.0])}]
    torch.testing.assert_close(analysis.cosine_matrix(taus), torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="k must be"):
        analysis.sign_conflicts(taus, k=0)
