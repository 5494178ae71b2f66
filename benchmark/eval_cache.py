"""The eval tensor cache: each test split decoded once into uint8 at the model's resolution.

Trials never decode images: they memory-map ``images.npy`` (uint8 [N, 3, H, W]) and normalise on
the device. Keyed by (dataset, split, sizes, seed, resolution) so any change re-creates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark import data
from benchmark.keys import content_key
from benchmark.storage import StorageRoot, atomic_write, safe_name

if TYPE_CHECKING:
    from benchmark.specs import DataSpec


def _paths(storage: StorageRoot, dataset: str, split: str, spec: "DataSpec") -> tuple[Path, Path]:
    key = content_key("eval-tensors", {"dataset": dataset, "split": split, "data": spec})
    folder = storage.cache / "tensors" / f"{safe_name(dataset)}-{split}-{key}"
    return folder / "images.npy", folder / "labels.npy"


def ensure_split(storage: StorageRoot, dataset: str, split: str, spec: "DataSpec") -> None:
    images_path, labels_path = _paths(storage, dataset, split, spec)
    if images_path.exists() and labels_path.exists():
        return
    images, labels = data.load_split(dataset, split, spec)
    # labels first: images.npy is the "complete" marker checked above together with labels
    for path, array in ((labels_path, labels.astype(np.int64)), (images_path, images.astype(np.uint8))):
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array)


def load_split(storage: StorageRoot, dataset: str, split: str, spec: "DataSpec") -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped uint8 images and int64 labels, creating the cache entry on first use."""
    ensure_split(storage, dataset, split, spec)
    images_path, labels_path = _paths(storage, dataset, split, spec)
    return np.load(images_path, mmap_mode="r"), np.load(labels_path)
