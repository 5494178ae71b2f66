"""Base mergers of docs/METHODS.md §2, one module each; importing this package registers them in `ww.MERGERS`."""

from . import breadcrumbs, consensus, dare, iso, magmax, pcb, randmix, task_arithmetic, ties, tsv_m, weight_averaging

__all__ = [
    "breadcrumbs",
    "consensus",
    "dare",
    "iso",
    "magmax",
    "pcb",
    "randmix",
    "task_arithmetic",
    "ties",
    "tsv_m",
    "weight_averaging",
]
