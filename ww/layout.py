"""The layout of a flat task-vector bank: which tensor occupies which consecutive slice.

A layout is an ordered tuple of ``(name, shape)`` pairs; tensor ``i`` occupies the slice that starts
where tensor ``i - 1`` ends. Mergers that act on the whole flattened encoder (TIES, PCB; docs/METHODS.md §2)
ignore it, per-tensor mergers (TSV-M, Iso-C, Breadcrumbs) and position-derived random streams use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Layout = tuple[tuple[str, tuple[int, ...]], ...]


def normalize_layout(layout: Iterable[tuple[str, Iterable[int]]]) -> Layout:
    """`layout` as a tuple of ``(str, tuple[int, ...])``; rejects duplicate names and negative sizes."""
    entries = []
    seen = set()
    for entry in layout:
        try:
            name, shape = entry
            shape = tuple(int(size) for size in shape)
        except (TypeError, ValueError) as error:
            raise ValueError(f"layout entries must be (name, shape) pairs, got {entry!r}") from error
        if not isinstance(name, str):
            raise ValueError(f"layout names must be strings, got {name!r}")
        if name in seen:
            raise ValueError(f"layout names tensor {name!r} twice")
        if any(size < 0 for size in shape):
            raise ValueError(f"layout shape of {name!r} has a negative size: {shape}")
        seen.add(name)
        entries.append((name, shape))
    return tuple(entries)


def layout_slices(layout: Layout) -> dict[str, slice]:
    """Tensor name -> its slice of the flat vector, in layout order."""
    slices = {}
    start = 0
    for name, shape in layout:
        stop = start + math.prod(shape)
        slices[name] = slice(start, stop)
        start = stop
    return slices


def layout_numel(layout: Layout) -> int:
    """Number of scalar entries a flat vector with this layout has."""
    return sum(math.prod(shape) for _, shape in layout)
