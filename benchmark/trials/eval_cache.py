"""The eval tensor cache: each split decoded once into uint8 at the model's resolution.

Trials never decode images (docs/DESIGN.md, data flow step 2): they memory-map ``images.npy``
(uint8 [N, 3, R, R]) and normalise on the device. Decoding a real test split costs minutes
(JPEG decode + bicubic resize per image); reading it back from the page cache costs milliseconds,
and every trial of a grid, every expert's fine-tuning and every worker on the node shares it.

Keys: a toy split is keyed by (task, split, ``DataSpec``) — its sizes and seed decide its
content — plus the resolution when it differs from the toy's native 32 px and the toy suite's
revision (``toy_data`` of `benchmark.spec.keys.REVISIONS`). A real split is keyed by (task, split,
resolution, preprocessing version, validation rule) and *not* by the
``DataSpec`` sizes, which real datasets ignore, nor by the data root's path, so moving the data
does not invalidate the cache. Replacing the files of a dataset in place does not either: delete
``<root>/cache/tensors/<dataset>-*`` after changing a dataset on disk.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.data import loaders as data
from benchmark.results.storage import StorageRoot, atomic_write, safe_name, write_text_atomic
from benchmark.spec.keys import content_key, revision

if TYPE_CHECKING:
    from benchmark.spec.schema import DataSpec


def _resolution(dataset: str, resolution: int | None) -> int | None:
    """The resolution a cache entry is stored at; None means the toy's native size."""
    if data.is_real(data.parse_task(dataset).dataset):
        return resolution or data.DEFAULT_RESOLUTION
    from benchmark.toy import TOY_IMAGE_SIZE

    return None if resolution in (None, TOY_IMAGE_SIZE) else resolution


def tensor_revision(dataset: str) -> dict:
    """What versions the code producing the tensors of task ``dataset``: the preprocessing and the
    validation rule for a real dataset, the toy suite's revision for a toy task. Experts and trials
    hash it too, as they train and test on these tensors."""
    if data.is_real(data.parse_task(dataset).dataset):
        from benchmark.data.images import PREPROCESS_VERSION

        return {"preprocess": PREPROCESS_VERSION, "validation": [data.VALIDATION_FRACTION, data.VALIDATION_SALT]}
    return {"toy_data": revision("toy_data")}


def cache_folder(
    storage: StorageRoot, dataset: str, split: str, spec: "DataSpec", resolution: int | None = None
) -> Path:
    """Folder of one cache entry: ``<root>/cache/tensors/<task>-<split>[-<R>px]-<key>``."""
    size = _resolution(dataset, resolution)
    if data.is_real(data.parse_task(dataset).dataset):
        payload = {"dataset": dataset, "split": split, "resolution": size, **tensor_revision(dataset)}
    else:
        payload = {"dataset": dataset, "split": split, "data": spec, "revision": tensor_revision(dataset)}
        if size is not None:
            payload["resolution"] = size
    key = content_key("eval-tensors", payload)
    suffix = f"-{size}px" if size is not None else ""
    return storage.cache / "tensors" / f"{safe_name(dataset)}-{split}{suffix}-{key}"


def _paths(folder: Path) -> tuple[Path, Path]:
    return folder / "images.npy", folder / "labels.npy"


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def _build_real(folder: Path, dataset: str, split: str, size: int, root: str | os.PathLike | None) -> None:
    """Stream a real split into a memory-mapped ``.npy``: memory stays bounded for any split size."""
    from benchmark.data.images import decode_batches, default_threads

    images_path, labels_path = _paths(folder)
    start = time.perf_counter()
    samples = data.open_split(dataset, split, root)
    _save(labels_path, samples.labels.astype(np.int64))
    with atomic_write(images_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), 3, size, size))
        for offset, batch in decode_batches(
            samples.load,
            range(len(samples)),
            size,
            names=samples.keys,
            what=f"{dataset} {split} under {data.data_root(root)}",
        ):
            out[offset : offset + len(batch)] = batch
        out.flush()
        del out
    write_text_atomic(
        folder / "meta.json",
        json.dumps(
            {
                "task": dataset,
                "split": split,
                "n": len(samples),
                "resolution": size,
                "layout": type(data.find_layout(data.parse_task(dataset).dataset, root)).__name__,
                "data_root": str(data.data_root(root)),
                "seconds": time.perf_counter() - start,
                "threads": default_threads(),
            },
            indent=1,
        ),
    )


def ensure_split(
    storage: StorageRoot,
    dataset: str,
    split: str,
    spec: "DataSpec",
    *,
    resolution: int | None = None,
    root: str | os.PathLike | None = None,
) -> Path:
    """Create the cache entry of (task ``dataset``, ``split``) unless it exists; return its folder.

    ``resolution`` is the model's input size (``benchmark.model.pretrained.image_resolution``); real tasks
    default to 224 px, toy tasks to their native 32 px. ``root`` is the data root of real tasks.
    """
    folder = cache_folder(storage, dataset, split, spec, resolution)
    images_path, labels_path = _paths(folder)
    if images_path.exists() and labels_path.exists():
        return folder
    size = _resolution(dataset, resolution)
    if data.is_real(data.parse_task(dataset).dataset):
        _build_real(folder, dataset, split, size, root)
        return folder
    images, labels = data.load_split(dataset, split, spec, resolution=size)
    # labels first: images.npy is the "complete" marker checked above together with labels
    _save(labels_path, labels.astype(np.int64))
    _save(images_path, images.astype(np.uint8))
    return folder


def load_split(
    storage: StorageRoot,
    dataset: str,
    split: str,
    spec: "DataSpec",
    *,
    resolution: int | None = None,
    root: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped uint8 images and int64 labels, creating the cache entry on first use."""
    folder = ensure_split(storage, dataset, split, spec, resolution=resolution, root=root)
    images_path, labels_path = _paths(folder)
    return np.load(images_path, mmap_mode="r"), np.load(labels_path)
