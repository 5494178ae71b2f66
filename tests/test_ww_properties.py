"""Invariants of the mergers and of weaving that hold for every input (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ww

SETTINGS = settings(max_examples=40, deadline=None)
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def task_matrices(draw, elements=finite, max_tasks=4, max_params=8):
    tasks = draw(st.integers(1, max_tasks))
    params = draw(st.integers(1, max_params))
    rows = draw(st.lists(st.lists(elements, min_size=params, max_size=params), min_size=tasks, max_size=tasks))
    return torch.tensor(rows, dtype=torch.float64)


def _as_vectors(matrix):
    return [{"v": row.clone()} for row in matrix]


@SETTINGS
@given(task_matrices(), st.data(), finite)
def test_task_arithmetic_is_linear(taus, data, scale):
    other = torch.tensor(
        data.draw(st.lists(st.lists(finite, min_size=taus.shape[1], max_size=taus.shape[1]),
                           min_size=taus.shape[0], max_size=taus.shape[0])),
        dtype=torch.float64,
    )
    def task_arithmetic(matrix):
        return ww.merge("task_arithmetic", _as_vectors(matrix))["v"]

    combined = task_arithmetic(scale * taus + other)
    expected = scale * task_arithmetic(taus) + task_arithmetic(other)
    torch.testing.assert_close(combined, expected, rtol=1e-9, atol=1e-6)


@SETTINGS
@given(task_matrices(elements=st.floats(min_value=1e-3, max_value=1e3)))
def test_ties_with_k_one_and_positive_entries_is_the_mean(taus):
    merged = ww.merge("ties", _as_vectors(taus), k=1.0)["v"]
    torch.testing.assert_close(merged, taus.mean(dim=0), rtol=1e-12, atol=0)


@SETTINGS
@given(task_matrices(), st.sampled_from([0.1, 0.2, 0.5, 1.0]))
def test_ties_is_odd(taus, k):
    merged = ww.merge("ties", _as_vectors(taus), k=k)["v"]
    negated = ww.merge("ties", _as_vectors(-taus), k=k)["v"]
    assert torch.equal(negated, -merged)


@SETTINGS
@given(task_matrices())
def test_magmax_keeps_one_task_entry_of_maximal_magnitude(taus):
    merged = ww.merge("magmax", _as_vectors(taus))["v"]
    assert torch.equal(merged.abs(), taus.abs().max(dim=0).values)
    assert ((taus == merged).any(dim=0)).all()


@SETTINGS
@given(task_matrices(), st.lists(st.floats(min_value=-3, max_value=3), min_size=1, max_size=6))
def test_plain_avg_weaving_is_task_arithmetic_at_the_mean_lambda(taus, lambdas):
    woven = ww.weave(_as_vectors(taus), "task_arithmetic", lambdas=lambdas, collaborative=False)["v"]
    expected = taus.sum(dim=0) * (sum(lambdas) / len(lambdas))
    torch.testing.assert_close(woven, expected, rtol=1e-9, atol=1e-9)
