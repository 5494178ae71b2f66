"""Writing analysis outputs: Parquet tables and PNG figures, each atomically (temp + rename).

Analyses write next to the results, under ``<root>/analysis/<spec-name>/``; like every artifact of
the root, a file appears whole or not at all, so a reader never loads half a table.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmark.results.storage import atomic_write


def write_table(rows: list[dict], path: Path) -> Path:
    """``rows`` (dicts with the same keys) as one Parquet file; NaN stays NaN, None becomes null."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    columns = list(dict.fromkeys(name for row in rows for name in row))
    table = pa.Table.from_pylist([{name: row.get(name) for name in columns} for row in rows])
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)
    return path


def figure(**kwargs):
    """A matplotlib Figure on its own Agg canvas: no pyplot state, so nothing global changes for
    other code in the process (tests, Ray workers) and headless nodes need no display."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, path: Path) -> Path:
    """Save a figure as PNG atomically (temp + rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path
