"""ww.default_lambdas: the search spaces Λ of METHODS §1, exact decimal values."""

import pytest

import ww


def test_ties_grid_is_point_one_to_one_point_eight_exactly():
    assert ww.default_lambdas("ties") == [
        0.1,
        0.2,
        0.3,
        0.4,
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
        1.1,
        1.2,
        1.3,
        1.4,
        1.5,
        1.6,
        1.7,
        1.8,
    ]


@pytest.mark.parametrize(
    "name, count, first, last",
    [
        ("pcb", 25, 0.1, 2.5),
        ("ties", 18, 0.1, 1.8),
        ("dare_ties", 18, 0.1, 1.8),
        ("tsv_m", 16, 0.5, 2.0),
        ("iso_c", 20, 0.1, 2.0),
        ("task_arithmetic", 10, 0.1, 1.0),
        ("weight_averaging", 10, 0.1, 1.0),
        ("magmax", 10, 0.1, 1.0),
        ("breadcrumbs", 10, 0.1, 1.0),
        ("dare_ta", 10, 0.1, 1.0),
        ("consensus", 10, 0.1, 1.0),
        ("randmix", 10, 0.1, 1.0),
    ],
)
def test_grids_have_step_point_one_with_endpoints(name, count, first, last):
    grid = ww.default_lambdas(name)
    assert len(grid) == count
    assert grid[0] == first and grid[-1] == last
    assert all(repr(value) == repr(round(value, 1)) for value in grid)  # no 0.30000000000000004
    assert all(abs((b - a) - 0.1) < 1e-12 for a, b in zip(grid, grid[1:]))


def test_default_lambdas_returns_a_fresh_list():
    grid = ww.default_lambdas("ties")
    grid.append(99.0)
    assert 99.0 not in ww.default_lambdas("ties")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'iso_c'"):
        ww.default_lambdas("iso-c")
    with pytest.raises(ValueError, match="unknown merger"):
        ww.default_lambdas("zzz")
