"""Every base merger of docs/METHODS.md §2 on hand-computed cases; the registry, validation and contracts."""

import math

import pytest
import torch

import ww
from ww.engine.counter_rng import uniform_lanes16
from ww.hyperparams import hyperparameters_of
from ww.mergers.breadcrumbs import row_counts
from ww.mergers.iso import subspace_sizes
from ww.mergers.pcb import quantile_ranks
from ww.mergers.ties import keep_count
from ww.registry import merger


def _vectors(*rows, layout=None):
    """Task vectors as state dicts; each row is split into tensors by ``layout`` (name -> length)."""
    layout = layout or {"v": len(rows[0])}
    out = []
    for row in rows:
        state_dict, start = {}, 0
        for name, length in layout.items():
            state_dict[name] = torch.tensor(row[start : start + length], dtype=torch.float32)
            start += length
        out.append(state_dict)
    return out


def _flat(merged):
    return torch.cat([tensor.reshape(-1) for tensor in merged.values()]).tolist()


def test_weight_averaging_is_the_mean_and_task_arithmetic_the_sum():
    vectors = _vectors([1.0, 2.0], [3.0, 6.0], [-1.0, 1.0])
    assert _flat(ww.merge("weight_averaging", vectors)) == [1.0, 3.0]
    assert _flat(ww.merge("task_arithmetic", vectors)) == [3.0, 9.0]


# TIES hand case, k = 0.5 of P = 6 entries -> 3 kept per task (more on threshold ties).
# tau1 |.| = 2,2,1,5,.5,3 -> 3rd largest 2 -> keeps 2,2,5,-3 (four: tie at the threshold)
# tau2 |.| = 2,4,1,1,.2,3 -> 3rd largest 2 -> keeps 2,-4,3
# tau3 |.| = 1,2,8,9,.1,.3 -> 3rd largest 2 -> keeps 2,-8,-9
# e0: 2+2 = 4 -> + -> mean(2, 2) = 2
# e1: 2-4+2 = 0 -> majority: 2 positive vs 1 negative -> + -> mean(2, 2) = 2
# e2: -8 -> -8;  e3: 5-9 = -4 -> - -> -9;  e4: nothing kept -> 0
# e5: -3+3 = 0 and one positive vs one negative -> no elected sign -> 0 (no task agrees)
TIES_TAUS = ([2.0, 2.0, 1.0, 5.0, 0.5, -3.0], [2.0, -4.0, 1.0, -1.0, 0.2, 3.0], [-1.0, 2.0, -8.0, -9.0, 0.1, 0.3])
TIES_EXPECTED = [2.0, 2.0, -8.0, -9.0, 0.0, 0.0]


def test_ties_hand_case_with_threshold_tie_zero_sum_election_and_no_agreeing_task():
    merged = ww.merge("ties", _vectors(*TIES_TAUS), k=0.5)
    assert _flat(merged) == TIES_EXPECTED


def test_ties_trims_over_the_whole_flattened_vector_across_tensors():
    split = _vectors(*TIES_TAUS, layout={"a": 2, "b": 3, "c": 1})
    merged = ww.merge("ties", split, k=0.5)
    assert list(merged) == ["a", "b", "c"]
    assert _flat(merged) == TIES_EXPECTED
    # Globally the top half of [1, 2 | 10, 20] is 10, 20; per tensor it would keep 2 and 20.
    assert _flat(ww.merge("ties", _vectors([1.0, 2.0, 10.0, 20.0], layout={"a": 2, "b": 2}), k=0.5)) == [
        0.0,
        0.0,
        10.0,
        20.0,
    ]


def test_ties_keeps_every_entry_tied_with_the_threshold():
    # k = 0.25 of 4 entries is 1, but both 3s equal the threshold and are kept.
    assert _flat(ww.merge("ties", _vectors([3.0, -3.0, 1.0, 2.0]), k=0.25)) == [3.0, -3.0, 0.0, 0.0]


def test_ties_keep_count_reads_k_as_written():
    assert keep_count(0.1, 30) == 3  # ceil(0.1 * 30) is 4 in binary floating point
    assert keep_count(0.2, 11) == 3
    assert keep_count(1.0, 7) == 7
    assert keep_count(0.001, 10) == 1


def test_ties_default_k_is_twenty_percent():
    assert ww.MERGERS["ties"].defaults == {"k": 0.2}
    # P = 10, k = 0.2 -> 2 kept: 9 and -7; a single task keeps its own values.
    tau = [9.0, 1.0, -7.0, 2.0, 3.0, 0.0, -1.0, 4.0, 5.0, -6.0]
    assert _flat(ww.merge("ties", _vectors(tau))) == [9.0, 0, -7.0, 0, 0, 0, 0, 0, 0, 0]


def test_magmax_takes_largest_magnitude_and_ties_go_to_the_later_task():
    vectors = _vectors([3.0, -2.0, 1.0, 0.5], [-3.0, 2.0, 0.5, -4.0], [1.0, 1.0, -1.0, 2.0])
    # e0: |3| tie tau1/tau2 -> tau2; e1: |2| tie -> tau2; e2: |1| tie tau1/tau3 -> tau3; e3: -4
    assert _flat(ww.merge("magmax", vectors)) == [-3.0, 2.0, -1.0, -4.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ["weight_averaging", "task_arithmetic", "ties", "magmax"])
def test_mergers_return_the_input_dtype(name, dtype):
    vectors = [{"v": torch.tensor([1.5, -2.0], dtype=dtype)}, {"v": torch.tensor([2.25, 1.0], dtype=dtype)}]
    merged = ww.merge(name, vectors, **({"k": 1.0} if name == "ties" else {}))
    assert merged["v"].dtype == dtype
    expected = {
        "weight_averaging": [1.875, -0.5],
        "task_arithmetic": [3.75, -1.0],
        "ties": [1.875, -2.0],  # signs + and (-2+1 -> -): mean(1.5, 2.25), then -2 alone
        "magmax": [2.25, -2.0],
    }[name]
    assert merged["v"].tolist() == expected


@pytest.mark.parametrize("name", ["weight_averaging", "task_arithmetic", "ties", "magmax"])
def test_mergers_neither_mutate_nor_alias_their_inputs(name):
    vectors = _vectors(*TIES_TAUS)
    originals = [{key: tensor.clone() for key, tensor in vector.items()} for vector in vectors]
    bank = ww.TaskVectorBank.from_state_dicts(vectors[:1])
    bank_before = bank.data.clone()
    ww.merge(name, vectors)
    for tensor in ww.merge(name, bank).values():  # one task: magmax/ties could return the row itself
        tensor.fill_(123.0)
    assert torch.equal(bank.data, bank_before)
    for vector, original in zip(vectors, originals):
        assert torch.equal(vector["v"], original["v"])


def test_unknown_merger_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'ties'"):
        ww.merge("tie", _vectors([1.0]))


def test_unknown_hyper_parameter_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"no hyper-parameter 'kk'.*Valid hyper-parameters: k\."):
        ww.merge("ties", _vectors([1.0]), kk=0.2)
    with pytest.raises(ValueError, match="no hyper-parameter 'k'.*Valid hyper-parameters: none"):
        ww.merge("task_arithmetic", _vectors([1.0]), k=0.2)


@pytest.mark.parametrize("k", [0, 0.0, -0.1, 1.5, math.nan, "0.2", True])
def test_ties_rejects_k_outside_zero_one(k):
    with pytest.raises(ValueError, match="k must"):
        ww.merge("ties", _vectors([1.0, 2.0]), k=k)


def test_ties_accepts_k_equal_to_one():
    assert _flat(ww.merge("ties", _vectors([1.0, -2.0]), k=1)) == [1.0, -2.0]


def test_registry_records_citation_grid_and_defaults():
    record = ww.MERGERS["ties"]
    assert "2306.01708" in record.citation
    assert record.lambdas == tuple(ww.default_lambdas("ties"))
    assert ww.MERGERS["magmax"].defaults == {}
    with pytest.raises(TypeError):
        ww.MERGERS["extra"] = record  # read-only view


def test_hyper_parameters_come_from_the_signature_and_bad_signatures_fail_at_registration():
    def good(tasks, *, alpha=0.5, steps=3):
        return tasks.map(lambda tau, block: tau.sum(0))

    def positional_hyper(tasks, alpha=0.5):
        return tasks.map(lambda tau, block: tau.sum(0))

    def no_default(tasks, *, alpha):
        return tasks.map(lambda tau, block: tau.sum(0))

    assert hyperparameters_of(good) == {"alpha": 0.5, "steps": 3}
    for bad in (positional_hyper, no_default):
        with pytest.raises(TypeError, match="alpha"):
            merger(name="never_registered", citation="-")(bad)
    assert "never_registered" not in ww.MERGERS
    with pytest.raises(ValueError, match="already registered"):
        merger(name="ties", citation="-")(good)


# Breadcrumbs, Consensus, DARE, PCB, randmix, TSV-M, Iso-C/CTS: hand-computed cases, validation, contracts

F64 = torch.float64


def _shaped_vectors(*rows, layout=None, dtype=F64):
    """Task vectors as state dicts; each row is split into tensors by ``layout`` (name -> shape)."""
    layout = layout or {"v": (len(rows[0]),)}
    out = []
    for row in rows:
        state_dict, start = {}, 0
        for name, shape in layout.items():
            size = math.prod(shape)
            state_dict[name] = torch.tensor(row[start : start + size], dtype=dtype).reshape(shape)
            start += size
        out.append(state_dict)
    return out


def _random_bank(tasks=3, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    layout = {"w": (6, 5), "b": (5,), "s": (), "conv": (2, 3, 2, 2)}
    return [
        {name: torch.randn(shape, generator=generator, dtype=dtype) for name, shape in layout.items()}
        for _ in range(tasks)
    ]


# ---------------------------------------------------------------- hand-computed cases


def test_breadcrumbs_drops_the_outlier_and_keeps_the_next_beta_fraction_per_row():
    # d = 10, γ = 0.1 -> remove ⌊1⌋ = 1 (the 10); β = 0.3 of the 9 left -> keep ⌈2.7⌉ = 3: -9, 8, 7
    row = [10.0, -9.0, 8.0, 7.0, -6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    # second row: -3 is removed; the next three magnitudes are 0.5, 0.25 and 0.0 (zeros tie, add nothing)
    other = [0.5, 0.25, -3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    merged = ww.merge("breadcrumbs", _shaped_vectors(row + other, layout={"m": (2, 10)}), beta=0.3, gamma=0.1)
    assert merged["m"].tolist() == [
        [0.0, -9.0, 8.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]


def test_breadcrumbs_sums_tasks_rowwise_and_leaves_zero_dim_tensors_untouched():
    layout = {"s": (), "m": (1, 4)}
    first = [5.0, 4.0, -3.0, 2.0, 1.0]  # row [4, -3, 2, 1]: γ = 0.25 removes 4, β = 0.5 of 3 keeps ⌈1.5⌉ = 2: -3, 2
    second = [-7.0, 1.0, 1.5, 8.0, -2.0]  # row [1, 1.5, 8, -2]: removes 8, keeps -2, 1.5
    merged = ww.merge("breadcrumbs", _shaped_vectors(first, second, layout=layout), beta=0.5, gamma=0.25)
    assert merged["s"].item() == -2.0  # 5 + (-7), no row to mask
    assert merged["m"].tolist() == [[0.0, -3.0 + 1.5, 2.0, -2.0]]


def test_breadcrumbs_row_counts_read_fractions_as_decimals():
    assert row_counts(768, beta=0.1, gamma=0.01) == (7, 77)  # ⌊7.68⌋ removed, ⌈76.1⌉ kept
    assert row_counts(10, beta=0.3, gamma=0.1) == (1, 3)
    assert row_counts(32, beta=0.1, gamma=0.01) == (0, 4)
    assert row_counts(3, beta=1.0, gamma=0.5) == (1, 2)


def test_consensus_keeps_tau_mtl_where_at_least_k_tall_masks_agree():
    # τMTL = [3, 1.7, 5.2, 1.9]; users per entry: 3, 1 (only τ1), 1 (only τ3), 2 (τ1, τ2)
    taus = _shaped_vectors([1.0, 2.0, 0.1, 1.0], [1.0, -0.5, 0.1, 1.0], [1.0, 0.2, 5.0, -0.1])
    assert _flat(ww.merge("consensus", taus)) == [3.0, 0.0, 0.0, 1.9]
    # with k = 1 every entry some task uses is kept; with k = 3 only the first
    torch.testing.assert_close(
        torch.tensor(_flat(ww.merge("consensus", taus, k=1)), dtype=F64), torch.tensor([3.0, 1.7, 5.2, 1.9], dtype=F64)
    )
    assert _flat(ww.merge("consensus", taus, k=3)) == [3.0, 0.0, 0.0, 0.0]


def test_consensus_keeps_entries_used_by_exactly_k_tasks_in_fp32():
    # fp32 (the banks' usual dtype): the last entry has exactly k = 2 users and must be kept
    taus = [
        {"v": torch.tensor(row, dtype=torch.float32)}
        for row in ([1.0, 2.0, 0.1, 1.0], [1.0, -0.5, 0.1, 1.0], [1.0, 0.2, 5.0, -0.1])
    ]
    merged = ww.merge("consensus", taus)["v"]
    assert merged.dtype == torch.float32
    assert merged.tolist() == pytest.approx([3.0, 0.0, 0.0, 1.9])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_at_least_a_scalar_threshold_is_exact_in_the_values_precision(dtype):
    from ww.engine.blockops import at_least

    values = torch.tensor([1.0, 2.0, 3.0, 2.0], dtype=dtype)
    assert at_least(values, 2).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert at_least(values, 2.0).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert at_least(values, 3).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_pcb_hand_case_clamps_balances_and_keeps_the_top_score():
    # P = 4: quantile positions ⌊0.04⌋ = 0 and ⌊3.96⌋ - 1 = 2 -> clamp |τ| to [min, 2nd largest]
    # τ1 -> clamped [2,-2,1,0.5], m1 = [1,1,1/3,0]; τ2 = [1,3,-1,2] -> clamped [1,2,-1,2], m2 = [0,1,0,1]
    # β1 = [e²·tanh1, e²(tanh1 - tanh1) = 0, e^(2/9)·tanh(1/9), 0]; β2 = [0, 0, 0, e²·tanh1]
    # ratio 0.25 -> one entry kept per task: τ1's entry 0 and τ2's entry 3 -> their clamped values
    taus = _shaped_vectors([4.0, -2.0, 1.0, 0.5], [1.0, 3.0, -1.0, 2.0])
    assert quantile_ranks(4) == (4, 2)
    torch.testing.assert_close(
        torch.tensor(_flat(ww.merge("pcb", taus, ratio=0.25)), dtype=F64), torch.tensor([2.0, 0.0, 0.0, 2.0], dtype=F64)
    )


def test_tsv_m_keeps_each_tasks_top_direction_and_averages_the_rest():
    layout = {"w": (2, 2), "b": (2,), "text_projection": (2, 2)}
    first = [3.0, 0.0, 0.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]  # w = diag(3, 1): top triplet 3·e1e1ᵀ
    second = [0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 3.0, 3.0, 3.0, 3.0]  # w = diag(0, 2): top triplet 2·e2e2ᵀ
    merged = ww.merge("tsv_m", _shaped_vectors(first, second, layout=layout))
    torch.testing.assert_close(merged["w"], torch.tensor([[3.0, 0.0], [0.0, 2.0]], dtype=F64))
    assert merged["b"].tolist() == [2.0, 1.0]  # not a matrix: the mean
    assert merged["text_projection"].tolist() == [[2.0, 2.0], [2.0, 2.0]]  # excluded: the mean


def test_iso_c_flattens_the_spectrum_of_the_sum():
    # Δ = [[0, 3], [1, 0]]: σ = 3 (e1 -> e2) and 1; U Vᵀ = [[0, 1], [1, 0]]; mean σ = 2
    taus = _shaped_vectors([0.0, 2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], layout={"w": (2, 2)})
    torch.testing.assert_close(ww.merge("iso_c", taus)["w"], torch.tensor([[0.0, 2.0], [2.0, 0.0]], dtype=F64))


def test_iso_cts_combines_common_and_task_specific_directions_isotropically():
    # Δ = diag(5, 4, 2, 1); r = 4, T = 2, fraction 0.5 -> 2 common (e1, e2) + 1 per task (e3, e4)
    # concatenated σ = [2, 1, 5, 4] -> mean 3, bases already orthonormal -> 3·I
    first = torch.diag(torch.tensor([5.0, 0.0, 2.0, 0.0], dtype=F64))
    second = torch.diag(torch.tensor([0.0, 4.0, 0.0, 1.0], dtype=F64))
    merged = ww.merge("iso_cts", [{"w": first}, {"w": second}], common_fraction=0.5)
    torch.testing.assert_close(merged["w"], 3 * torch.eye(4, dtype=F64))
    assert subspace_sizes(4, 2, 0.5) == (2, 1)
    assert subspace_sizes(768, 8, 0.8) == (616, 19)  # ⌊614.4⌋, round(154/8) = 19 per task
    assert subspace_sizes(3, 4, 0.0) == (3, 0)  # never more task directions than the rank


def test_dare_with_p_zero_is_task_arithmetic_and_drops_about_p_otherwise():
    taus = _random_bank(tasks=2)
    ta = ww.merge("task_arithmetic", taus)
    dare = ww.merge("dare_ta", taus, p=0.0)
    assert all(torch.equal(dare[name], ta[name]) for name in ta)
    ones = [{"v": torch.ones(20_000)}]
    dropped = ww.merge("dare_ta", ones, p=0.5, seed=3)["v"]
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}  # survivors rescaled by 1 / (1 - p)
    assert abs(float((dropped == 0).double().mean()) - 0.5) < 0.02


def test_dare_masks_are_the_documented_counter_stream():
    taus = _random_bank(tasks=5)
    merged = ww.merge("dare_ta", taus, p=0.3, seed=7)
    for name, value in merged.items():
        stacked = torch.stack([tau[name].reshape(-1) for tau in taus])
        draws = uniform_lanes16(7, "dare", name, torch.arange(stacked.shape[1]), 5).to(torch.int32)
        keep = (draws >= round(0.3 * 65536) - 32768).to(stacked.dtype)
        expected = (stacked * keep * (1 / 0.7)).sum(0)
        torch.testing.assert_close(value.reshape(-1), expected)


def test_randmix_takes_every_entry_from_one_task_uniformly():
    taus = [{"v": torch.full((30_000,), float(value))} for value in (1.0, 2.0, 3.0)]
    mixed = ww.merge("randmix", taus, seed=5)["v"]
    for value in (1.0, 2.0, 3.0):
        assert abs(float((mixed == value).double().mean()) - 1 / 3) < 0.015
    again = ww.merge("randmix", taus, seed=5)["v"]
    other = ww.merge("randmix", taus, seed=6)["v"]
    assert torch.equal(mixed, again) and not torch.equal(mixed, other)


# ---------------------------------------------------------------- seeded mergers: position-derived


@pytest.mark.parametrize(
    "name, params", [("randmix", {"seed": 2}), ("dare_ta", {"seed": 2}), ("dare_ties", {"seed": 2})]
)
def test_seeded_mergers_do_not_depend_on_blocks_tensor_order_or_storage(name, params, tmp_path):
    taus = _random_bank(tasks=4, seed=1)
    whole = ww.merge(name, taus, **params)
    reordered = ww.merge(name, [dict(reversed(list(tau.items()))) for tau in taus], **params)
    bank = ww.TaskVectorBank.from_state_dicts(taus)
    record = ww.MERGERS[name]
    for block_entries in (1, 7, 64):
        flat = record.run(bank.stream(block_entries=block_entries, workers=2), params)
        assert torch.equal(flat, torch.cat([whole[key].reshape(-1) for key, _ in bank.layout]))
    ww.save_bank(tmp_path / "bank.safetensors", taus)
    mapped = ww.merge(name, ww.open_bank(tmp_path / "bank.safetensors"), **params)
    for key in whole:
        assert torch.equal(whole[key], reordered[key]) and torch.equal(whole[key], mapped[key])


# ---------------------------------------------------------------- contracts for every merger


def _params(name):
    return {"consensus": {"k": 1}}.get(name, {})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(ww.MERGERS))
def test_half_precision_is_computed_in_fp32_and_returned_in_its_dtype(name, dtype):
    taus = [{key: value.to(dtype) for key, value in tau.items()} for tau in _random_bank(tasks=3)]
    merged = ww.merge(name, taus)
    upcast = ww.merge(name, [{key: value.float() for key, value in tau.items()} for tau in taus])
    for key in merged:
        assert merged[key].dtype == dtype
        assert torch.equal(merged[key], upcast[key].to(dtype))


@pytest.mark.parametrize("name", sorted(ww.MERGERS))
def test_inputs_are_never_modified(name):
    taus = _random_bank(tasks=3)
    before = [{key: value.clone() for key, value in tau.items()} for tau in taus]
    bank = ww.TaskVectorBank.from_state_dicts(taus)
    data = bank.data.clone()
    merged = ww.merge(name, bank)
    ww.weave(bank, name, lambdas=[0.5, 1.0], pooling="avg")
    for value in merged.values():
        value.fill_(123.0)  # the output shares no memory with the bank
    assert torch.equal(bank.data, data)
    for tau, old in zip(taus, before):
        assert all(torch.equal(tau[key], old[key]) for key in tau)


@pytest.mark.parametrize("name", sorted(ww.MERGERS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_task_vectors_are_rejected_with_the_task_and_tensor(name, bad):
    taus = _random_bank(tasks=3)
    taus[1]["w"][2, 3] = bad
    with pytest.raises(ValueError, match=r"task vector 'task_1' has a non-finite value .* tensor 'w'"):
        ww.merge(name, taus)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("ties", {"k": 1.5}, r"k must lie in \(0.0, 1.0\]"),
        ("dare_ties", {"k": 1.5}, r"k must lie in"),
        ("dare_ta", {"p": 1.0}, r"p must lie in \[0.0, 1.0\)"),
        ("dare_ties", {"p": -0.1}, r"p must lie in"),
        ("dare_ta", {"seed": 1.5}, "seed must be an int"),
        ("randmix", {"seed": "0"}, "seed must be an int"),
        ("breadcrumbs", {"beta": 0.0}, r"beta must lie in \(0.0, 1.0\]"),
        ("breadcrumbs", {"gamma": 1.0}, r"gamma must lie in \[0.0, 1.0\)"),
        ("consensus", {"k": 1.5}, "k must be an int"),
        ("consensus", {"k": 0}, r"k must lie in \[1"),
        ("consensus", {"tall_lambda": -0.4}, "tall_lambda must lie in"),
        ("pcb", {"ratio": 0.0}, r"ratio must lie in \(0.0, 1.0\]"),
        ("iso_cts", {"common_fraction": 1.5}, r"common_fraction must lie in \[0.0, 1.0\]"),
        ("tsv_m", {"k": 0.2}, "tsv_m has no hyper-parameter 'k'"),
        ("pcb", {"ration": 0.1}, "did you mean 'ratio'"),
    ],
)
def test_hyper_parameters_are_validated_before_any_work(name, params, message):
    with pytest.raises(ValueError, match=message):
        ww.merge(name, _random_bank(tasks=2), **params)
    with pytest.raises(ValueError, match=message):
        ww.weave(_random_bank(tasks=2), name, merger_params=params)


def test_defaults_are_the_methods_values():
    defaults = {name: dict(record.defaults) for name, record in ww.MERGERS.items()}
    assert defaults["dare_ta"] == {"p": 0.5, "seed": 0}
    assert defaults["dare_ties"] == {"p": 0.5, "k": 0.2, "seed": 0}
    assert defaults["breadcrumbs"] == {"beta": 0.1, "gamma": 0.01}
    assert defaults["randmix"] == {"seed": 0}
    assert defaults["consensus"] == {"tall_lambda": 0.4, "k": 2}
    assert defaults["pcb"] == {"ratio": 0.05}
    assert defaults["iso_cts"] == {"common_fraction": 0.8}
    assert defaults["tsv_m"] == defaults["iso_c"] == {}
    for name in ("dare_ta", "dare_ties", "breadcrumbs", "randmix", "consensus", "pcb", "tsv_m", "iso_c", "iso_cts"):
        assert "arXiv" in ww.MERGERS[name].citation


def test_iso_cts_sweeps_the_iso_c_grid():
    assert ww.default_lambdas("iso_cts") == ww.default_lambdas("iso_c")
    assert len(ww.default_lambdas("iso_cts")) == 20 and ww.default_lambdas("iso_cts")[-1] == 2.0


def test_consensus_needs_at_least_k_task_vectors():
    with pytest.raises(ValueError, match=r"consensus needs at least 2 task vectors .* got 1"):
        ww.merge("consensus", _random_bank(tasks=1))
    with pytest.raises(ValueError, match="at least 3 task vectors"):
        ww.merge("consensus", _random_bank(tasks=2), k=3)


def test_mismatched_task_vectors_are_rejected_for_new_mergers():
    first, second = _random_bank(tasks=2)
    second["w"] = second["w"].reshape(5, 6)
    with pytest.raises(ValueError, match="'w' has shape"):
        ww.merge("tsv_m", [first, second])
    del second["w"]
    with pytest.raises(ValueError, match="lacks tensor 'w'"):
        ww.merge("pcb", [first, second])


@pytest.mark.parametrize("name", ["ties", "pcb", "dare_ties", "breadcrumbs", "tsv_m", "magmax", "consensus"])
def test_worker_threads_do_not_change_results_or_torch_settings(name):
    # large enough (> SEQUENTIAL_ENTRIES) for the worker pool to be used
    generator = torch.Generator().manual_seed(4)
    taus = [
        {"w": torch.randn(300, 256, generator=generator), "b": torch.randn(70_000, generator=generator)}
        for _ in range(3)
    ]
    bank = ww.TaskVectorBank.from_state_dicts(taus)
    threads = torch.get_num_threads()
    record = ww.MERGERS[name]
    sequential = record.run(bank.stream(workers=1, block_entries=1 << 15))
    threaded = record.run(bank.stream(workers=2, block_entries=1 << 15))
    assert torch.equal(sequential, threaded)
    assert torch.get_num_threads() == threads


def test_pcb_caches_scores_when_merging_but_not_when_weaving(monkeypatch):
    """The β cache is PCB's one extra [T, P] copy; weaving promises T + 3 models, so it recomputes."""
    generator = torch.Generator().manual_seed(5)
    taus = [
        {"w": torch.randn(30, 20, generator=generator), "b": torch.randn(20, generator=generator)} for _ in range(3)
    ]
    bank = ww.TaskVectorBank.from_state_dicts(taus)  # built first: the bank itself is a [T, P] tensor
    empty = torch.empty
    shapes = []

    def spy(*size, **kwargs):
        shapes.append(tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size)
        return empty(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", spy)
    merged = ww.merge("pcb", bank)
    assert (3, 620) in shapes
    shapes.clear()
    woven = ww.weave(bank, "pcb", lambdas=[0.5, 1.0], pooling="avg")
    assert (3, 620) not in shapes
    monkeypatch.setattr(torch, "empty", empty)
    # the same M either way: avg over A* = {τ1..τ3, 0.5·M, 1.0·M}
    expected = {key: (sum(tau[key] for tau in taus) + 1.5 * merged[key]) / 5 for key in merged}
    for key in merged:
        torch.testing.assert_close(woven[key], expected[key], rtol=1e-5, atol=1e-6)
