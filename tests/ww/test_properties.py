"""Invariants of the mergers and of weaving that hold for every input (hypothesis)."""

import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ww
from ww.mergers.breadcrumbs import row_counts
from ww.mergers.tsv_m import tsv_factors

SETTINGS = settings(max_examples=30, deadline=None)
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def matrices(draw, max_tasks=4, max_rows=6, max_columns=6, elements=finite):
    tasks = draw(st.integers(1, max_tasks))
    rows = draw(st.integers(1, max_rows))
    columns = draw(st.integers(1, max_columns))
    values = draw(st.lists(elements, min_size=tasks * rows * columns, max_size=tasks * rows * columns))
    return torch.tensor(values, dtype=torch.float64).reshape(tasks, rows, columns)


def _vectors(stack):
    return [{"m": item.clone()} for item in stack]


@SETTINGS
@given(matrices(elements=st.floats(min_value=1e-3, max_value=1e3)), st.data())
def test_ties_with_k_one_and_agreeing_signs_is_the_mean(stack, data):
    column_signs = torch.tensor(
        data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=stack[0].numel(), max_size=stack[0].numel())),
        dtype=torch.float64,
    )
    signed = stack * column_signs.reshape(stack.shape[1:])
    merged = ww.merge("ties", _vectors(signed), k=1.0)["m"]
    torch.testing.assert_close(merged, signed.mean(dim=0), rtol=1e-12, atol=0)


@SETTINGS
@given(matrices(max_tasks=5), st.data())
def test_magmax_takes_the_largest_magnitude_and_ties_go_to_the_later_task(stack, data):
    # make some columns tie in magnitude across tasks with random signs
    tied = data.draw(st.lists(st.booleans(), min_size=stack[0].numel(), max_size=stack[0].numel()))
    flat = stack.reshape(stack.shape[0], -1).clone()
    for column, is_tied in enumerate(tied):
        if is_tied:
            flat[:, column] = flat[:, column].abs().max() * torch.tensor(
                data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=flat.shape[0], max_size=flat.shape[0])),
                dtype=torch.float64,
            )
    merged = ww.merge("magmax", _vectors(flat)).get("m")
    for column in range(flat.shape[1]):
        magnitudes = flat[:, column].abs()
        last = max(t for t in range(flat.shape[0]) if magnitudes[t] == magnitudes.max())
        assert merged[column] == flat[last, column]


@SETTINGS
@given(matrices(max_rows=7, max_columns=7))
def test_iso_c_has_equal_singular_values_summing_to_the_nuclear_norm_of_the_sum(stack):
    merged = ww.merge("iso_c", _vectors(stack))["m"]
    singular = torch.linalg.svdvals(merged)
    nuclear = torch.linalg.matrix_norm(stack.sum(0), ord="nuc")
    torch.testing.assert_close(singular.sum(), nuclear, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(singular, singular.mean().expand_as(singular), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(matrices(max_tasks=3, max_rows=8, max_columns=8))
def test_tsv_m_factors_are_orthonormal_and_rebuild_the_merge(stack):
    u, s, vh = tsv_factors(stack)
    count = u.shape[1]
    assert count == (min(stack.shape[1:]) // stack.shape[0]) * stack.shape[0]
    torch.testing.assert_close(u.T @ u, torch.eye(count, dtype=u.dtype), rtol=0, atol=1e-9)
    torch.testing.assert_close(vh @ vh.T, torch.eye(count, dtype=u.dtype), rtol=0, atol=1e-9)
    merged = ww.merge("tsv_m", _vectors(stack))["m"]
    torch.testing.assert_close(merged, (u * s) @ vh, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(st.integers(1, 5), st.floats(min_value=1e-3, max_value=0.9), st.integers(0, 2**31))
def test_dare_drops_a_p_fraction_of_each_task_and_rescales_the_survivors(tasks, p, seed):
    """Task t holds 2^(10t) everywhere, so Σt of the dropped vectors / scale is an integer whose
    bits are the keep masks: each task's drop rate must match p (5 σ of a binomial, plus p's
    2^-16 resolution) and every survivor must be rescaled by exactly 1/(1 − p)."""
    size = 4000
    stack = torch.stack([torch.full((size,), 2.0 ** (10 * t), dtype=torch.float64) for t in range(tasks)])
    merged = ww.merge("dare_ta", _vectors(stack), p=p, seed=seed)["m"]
    coded = merged * (1 - p)
    codes = coded.round()
    torch.testing.assert_close(coded, codes, rtol=1e-12, atol=1e-9)  # survivors × 1/(1 − p), nothing else
    codes = codes.long()
    for t in range(tasks):
        kept = (codes >> (10 * t)) & 1023
        assert set(kept.unique().tolist()) <= {0, 1}
        dropped = 1 - float(kept.double().mean())
        bound = 5 * math.sqrt(p * (1 - p) / size) + 2.0**-16
        assert abs(dropped - p) <= bound, (t, dropped, p)


@SETTINGS
@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 40),
    st.sampled_from([0.1, 0.25, 0.5, 1.0]),
    st.sampled_from([0.0, 0.01, 0.1, 0.3]),
    st.randoms(use_true_random=False),
)
def test_breadcrumbs_keeps_the_expected_count_per_row(tasks, rows, length, beta, gamma, rng):
    stack = torch.empty(tasks, rows, length, dtype=torch.float64)
    for t in range(tasks):
        for r in range(rows):
            magnitudes = list(range(1, length + 1))  # distinct magnitudes
            rng.shuffle(magnitudes)
            stack[t, r] = torch.tensor([m * rng.choice([-1, 1]) for m in magnitudes], dtype=torch.float64)
    removed, kept = row_counts(length, beta, gamma)
    for t in range(tasks):
        single = ww.merge("breadcrumbs", _vectors(stack[t : t + 1]), beta=beta, gamma=gamma)["m"]
        assert ((single != 0).sum(dim=1) == kept).all()
        # the kept entries are ranks removed+1 .. removed+kept by magnitude
        ranks = stack[t].abs().argsort(dim=1, descending=True).argsort(dim=1)
        assert torch.equal(single != 0, (ranks >= removed) & (ranks < removed + kept))


@SETTINGS
@given(matrices(max_tasks=5))
def test_randmix_and_consensus_at_k_one_lambda_zero(stack):
    mixed = ww.merge("randmix", _vectors(stack), seed=1)["m"]
    assert bool((stack == mixed).any(dim=0).all())
    everything = ww.merge("consensus", _vectors(stack), tall_lambda=0.0, k=1)["m"]
    assert torch.equal(everything, stack.sum(0))  # every TALL mask is all-ones at λ = 0


@SETTINGS
@given(matrices(max_tasks=4, max_rows=10, max_columns=10))
def test_pcb_is_a_weighted_mean_of_the_clamped_task_values(stack):
    assume(stack.abs().max() > 0)
    merged = ww.merge("pcb", _vectors(stack), ratio=0.5)["m"]
    low = stack.min(dim=0).values
    high = stack.max(dim=0).values
    inside = (merged >= torch.minimum(low, torch.zeros(())) - 1e-9) & (
        merged <= torch.maximum(high, torch.zeros(())) + 1e-9
    )
    assert bool(inside.all())


@SETTINGS
@given(matrices(max_tasks=4, max_rows=5, max_columns=9), st.sampled_from([0.0, 0.5, 0.8, 1.0]))
def test_iso_cts_is_isotropic_on_its_subspace(stack, fraction):
    merged = ww.merge("iso_cts", _vectors(stack), common_fraction=fraction)["m"]
    singular = torch.linalg.svdvals(merged)
    assume(singular.max() > 1e-6)
    nonzero = singular[singular > singular.max() * 1e-8]
    torch.testing.assert_close(nonzero, nonzero.mean().expand_as(nonzero), rtol=1e-8, atol=1e-9)


@SETTINGS
@given(matrices(), st.sampled_from([0.125, 0.5, 2.0, 8.0]))
def test_averaging_scales_and_weight_averaging_is_task_arithmetic_over_t(stack, scale):
    # powers of two scale exactly, so selections (top-k, magnitudes) cannot change by rounding
    average = ww.merge("weight_averaging", _vectors(stack))["m"]
    torch.testing.assert_close(average, ww.merge("task_arithmetic", _vectors(stack))["m"] / stack.shape[0])
    for name in ("ties", "magmax", "breadcrumbs", "tsv_m", "iso_c", "consensus"):
        if name == "consensus" and stack.shape[0] < 2:
            continue
        base = ww.merge(name, _vectors(stack))["m"]
        scaled = ww.merge(name, _vectors(stack * scale))["m"]
        torch.testing.assert_close(scaled, base * scale, rtol=1e-8, atol=1e-9 * (1 + math.fabs(scale)), msg=name)


# Linearity, oddness, weaving's mean-λ identity (subnormal inputs allowed)

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)
finite_or_subnormal = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def task_matrices(draw, elements=finite_or_subnormal, max_tasks=4, max_params=8):
    tasks = draw(st.integers(1, max_tasks))
    params = draw(st.integers(1, max_params))
    rows = draw(st.lists(st.lists(elements, min_size=params, max_size=params), min_size=tasks, max_size=tasks))
    return torch.tensor(rows, dtype=torch.float64)


def _as_vectors(matrix):
    return [{"v": row.clone()} for row in matrix]


@PROPERTY_SETTINGS
@given(task_matrices(), st.data(), finite_or_subnormal)
def test_task_arithmetic_is_linear(taus, data, scale):
    other = torch.tensor(
        data.draw(
            st.lists(
                st.lists(finite_or_subnormal, min_size=taus.shape[1], max_size=taus.shape[1]),
                min_size=taus.shape[0],
                max_size=taus.shape[0],
            )
        ),
        dtype=torch.float64,
    )

    def task_arithmetic(matrix):
        return ww.merge("task_arithmetic", _as_vectors(matrix))["v"]

    combined = task_arithmetic(scale * taus + other)
    expected = scale * task_arithmetic(taus) + task_arithmetic(other)
    torch.testing.assert_close(combined, expected, rtol=1e-9, atol=1e-6)


@PROPERTY_SETTINGS
@given(task_matrices(), st.sampled_from([0.1, 0.2, 0.5, 1.0]))
def test_ties_is_odd(taus, k):
    merged = ww.merge("ties", _as_vectors(taus), k=k)["v"]
    negated = ww.merge("ties", _as_vectors(-taus), k=k)["v"]
    assert torch.equal(negated, -merged)


@PROPERTY_SETTINGS
@given(task_matrices(), st.lists(st.floats(min_value=-3, max_value=3), min_size=1, max_size=6))
def test_plain_avg_weaving_is_task_arithmetic_at_the_mean_lambda(taus, lambdas):
    woven = ww.weave(_as_vectors(taus), "task_arithmetic", lambdas=lambdas, collaborative=False)["v"]
    expected = taus.sum(dim=0) * (sum(lambdas) / len(lambdas))
    torch.testing.assert_close(woven, expected, rtol=1e-9, atol=1e-9)
