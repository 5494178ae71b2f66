"""Default λ search spaces Λ of Weight Weaving, one table for every merger (docs/METHODS.md §1).

The paper sweeps λ on a linspace with step 0.1, endpoints included: PCB 0.1–2.5, TIES and
DARE-TIES 0.1–1.8, TSV-M 0.5–2.0, Iso-C 0.1–2.0, everything else 0.1–1.0. Grids are built from
integer tenths and rounded, so they hold 0.3 itself rather than 0.30000000000000004 and compare
equal to literals (result tables are keyed by λ).
"""

from __future__ import annotations

from types import MappingProxyType


def tenths_grid(first_tenth: int, last_tenth: int) -> tuple[float, ...]:
    """first_tenth/10, (first_tenth + 1)/10, ..., last_tenth/10, exact to 10 decimals."""
    return tuple(round(tenth / 10, 10) for tenth in range(first_tenth, last_tenth + 1))


DEFAULT_GRID = tenths_grid(1, 10)
"""0.1–1.0 (10 values): the grid of every merger docs/METHODS.md §1 does not list separately."""

LAMBDA_GRIDS = MappingProxyType(
    {
        "weight_averaging": DEFAULT_GRID,
        "task_arithmetic": DEFAULT_GRID,
        "ties": tenths_grid(1, 18),
        "dare_ta": DEFAULT_GRID,
        "dare_ties": tenths_grid(1, 18),
        "breadcrumbs": DEFAULT_GRID,
        "magmax": DEFAULT_GRID,
        "randmix": DEFAULT_GRID,
        "consensus": DEFAULT_GRID,
        "pcb": tenths_grid(1, 25),
        "tsv_m": tenths_grid(5, 20),
        "iso_c": tenths_grid(1, 20),
        # docs/METHODS.md §1 names only Iso-C; Iso-CTS is its variant and sweeps the same range (issue 3).
        "iso_cts": tenths_grid(1, 20),
    }
)
"""Merger name -> its default Λ, including mergers not implemented yet."""
