"""``run_bench.py analyze SPEC``: the analyses of docs/METHODS.md §4 on a finished run's experts.

- ``geometry``: cosines of task vectors (whole, per block, per tensor); increments and the √(s/t)
  baseline for sequential CIL; sequential vs independent when the root holds both.
- ``interference``: sign conflicts among top-k entries, MagMax/randmix shares, consensus histogram.
- ``output-space``: uniform soup vs logit, probability and raw-feature ensembles as n grows.
- ``scale``: accuracy, agreement and KL as α scales a whole model, a task vector and a merge.

Each writes Parquet and PNG under ``<root>/analysis/<spec-name>/`` (or ``out``) and prints a rich
summary. The maths lives in `ww.analysis` (torch only); this package loads experts and evaluates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from benchmark.results.storage import StorageRoot, safe_name
from benchmark.spec.schema import Spec

#: Analysis name (as ``--only`` spells it) → module with ``run(ctx) -> list[Path]``.
ANALYSES = {
    "geometry": "benchmark.analyze.geometry",
    "interference": "benchmark.analyze.interference",
    "output-space": "benchmark.analyze.output_space",
    "scale": "benchmark.analyze.scale",
}


@dataclass
class AnalysisSummary:
    out: Path
    written: dict[str, list[Path]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def parse_only(text: str | None) -> list[str]:
    """``"geometry,scale"`` → validated names in the canonical order; None → all of them."""
    if text is None:
        return list(ANALYSES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ANALYSES]
    if unknown or not names:
        raise ValueError(
            f"--only: unknown analysis {', '.join(unknown) or '(none given)'}; choose from {', '.join(ANALYSES)}"
        )
    return [name for name in ANALYSES if name in names]


def analysis_folder(storage: StorageRoot, spec: Spec) -> Path:
    """``<root>/analysis/<spec-name>/``: next to the results, one folder per spec."""
    return storage.root / "analysis" / safe_name(spec.name)


def run_analyses(
    spec: Spec,
    storage: StorageRoot,
    *,
    only: Sequence[str] | None = None,
    out: str | Path | None = None,
    console: Console | None = None,
    spec_path: str | None = None,
) -> AnalysisSummary:
    """Run the chosen analyses on the spec's experts in ``storage``; never trains anything."""
    import importlib

    from benchmark.analyze.context import AnalysisContext, bank_refs, check_experts

    console = console or Console()
    names = list(ANALYSES) if only is None else parse_only(",".join(only))
    if not storage.root.exists():
        raise FileNotFoundError(
            f"storage root {storage.root} does not exist; run the spec first "
            f"(python run_bench.py run {spec_path or 'SPEC'} --root {storage.root})"
        )
    check_experts(spec, storage, spec_path)
    folder = Path(out).expanduser().resolve() if out is not None else analysis_folder(storage, spec)
    ctx = AnalysisContext(spec=spec, storage=storage, out=folder, console=console, refs=bank_refs(spec))
    summary = AnalysisSummary(out=folder)
    for name in names:
        start = time.perf_counter()
        summary.written[name] = importlib.import_module(ANALYSES[name]).run(ctx)
        summary.seconds[name] = time.perf_counter() - start
    return summary
