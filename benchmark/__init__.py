"""The Weight Weaving benchmark harness: specs → experts (Ray Train) → grid (Ray Tune) → Parquet → rich.

Layers (docs/DESIGN.md): ``run_bench.py`` → ``benchmark`` → ``ww``. Nothing in ``ww`` imports from here.
"""

__version__ = "0.1.0"
