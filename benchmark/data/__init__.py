"""Data stage: which datasets exist, where they live on disk and how their splits are read.

- ``tasks``: task and dataset names, classes and domains (a pure catalogue; spec validation uses it);
- ``loaders``: class names, templates and labelled splits of a task (toy or real), the data root;
- ``classnames`` / ``templates``: the words of the zero-shot heads (docs/METHODS.md §3);
- ``layouts``: how each layout under the data root is found, listed and labelled;
- ``catalog``: one entry per dataset of the paper's setups (MTL 8/14/20, CIL, DG);
- ``images``: decoding to uint8 at the model's resolution (the eval tensor cache's input);
- ``fake``: tiny datasets written in each real layout, for the tests and ``perf eval``;
- ``cli``: ``run_bench.py data check`` / ``data prepare``.

Nothing here knows about specs or storage: loaders take plain values.
"""

from benchmark.data.catalog import MTL8, MTL14, MTL20, REAL_DATASETS, Download, RealDataset
from benchmark.data.layouts import DatasetLayout, DatasetMalformedError, DatasetMissingError, Probe, Samples

__all__ = [
    "MTL8",
    "MTL14",
    "MTL20",
    "REAL_DATASETS",
    "DatasetMalformedError",
    "DatasetMissingError",
    "Download",
    "DatasetLayout",
    "Probe",
    "RealDataset",
    "Samples",
]
