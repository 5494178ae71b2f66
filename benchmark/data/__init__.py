"""Real datasets: class names, prompt templates and on-disk layouts behind ``benchmark.data.loaders``.

- ``classnames`` / ``templates``: the words of the zero-shot heads (docs/METHODS.md §3);
- ``layouts``: how each layout under the data root is found, listed and labelled;
- ``catalog``: one entry per dataset of the paper's setups (MTL 8/14/20, CIL, DG);
- ``images``: decoding to uint8 at the model's resolution (the eval tensor cache's input);
- ``fake``: tiny datasets written in each real layout, for the tests and ``perf eval``.

``benchmark.data.loaders`` is the only public entry point; nothing here knows about specs or storage.
"""

from benchmark.data.catalog import MTL8, MTL14, MTL20, REAL_DATASETS, Download, RealDataset
from benchmark.data.layouts import DatasetMalformedError, DatasetMissingError, DatasetLayout, Probe, Samples

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
