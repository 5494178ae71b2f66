"""Base mergers of METHODS §2, one module each; importing this package registers them in `ww.MERGERS`."""

from . import magmax, task_arithmetic, ties, weight_averaging

__all__ = ["magmax", "task_arithmetic", "ties", "weight_averaging"]
