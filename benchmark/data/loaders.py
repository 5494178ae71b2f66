"""The dataset registry: task name → class names, prompt templates and labelled splits.

A *task* is what one expert is fine-tuned on and what one evaluation reads, written as a string:

    digits / SUN397       a whole dataset (MTL task, or the joint CIL evaluation)
    CIFAR100[2/20]        class-incremental split 2 of 20: a contiguous chunk of the dataset's fixed
                          class permutation, labels re-indexed within the split (its own head)
    DomainNet/sketch      one domain of a multi-domain dataset (DG: all classes, that domain only)

Two kinds of dataset sit behind the same functions:

- the embedded toy suite (lowercase names), generated deterministically, no download;
- the real datasets of docs/METHODS.md §3 (names as docs/METHODS.md writes them: ``SUN397``, ``Cars``, ...), read
  from a *data root*: the ``data_root`` argument, else ``$WW_DATA_ROOT``, else ``~/data``. Their
  layouts are documented in docs/DATA.md (``benchmark.data`` implements them).

Splits are ``train``, ``validation`` and ``test``. For real datasets ``test`` is the official test
split (or a documented seeded split where the dataset has none) and ``validation`` is ≈10 % of the
official training split chosen by a fixed hash of each image's identity, ``train`` the other ≈90 %.
``DataSpec``'s sizes (``n_train``/``n_test``) apply to the toy suite only: real splits are always
whole, so that results are comparable with the papers'. For the toy suite, ``validation`` holds
``max(1, n_train // 10)`` further draws of the train stream, disjoint from ``train``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from benchmark.data import REAL_DATASETS, DatasetMalformedError, DatasetMissingError, Samples
from benchmark.data.layouts import DatasetLayout, hash_fraction
from benchmark.data.tasks import (
    TaskRef,
    check_dataset_name,
    check_task_name,
    dataset_names,
    domains,
    is_real,
    n_classes,
    parse_task,
)
from benchmark.toy import TOY_IMAGE_SIZE, TOY_TASKS


class ToySizes(Protocol):
    """How many toy examples to generate, and from which seed (a spec's ``data:`` section has these)."""

    n_train: int
    n_test: int
    seed: int


__all__ = [
    "CLASS_ORDER_SEED",
    "DEFAULT_RESOLUTION",
    "SPLITS",
    "VALIDATION_FRACTION",
    "DatasetMalformedError",
    "DatasetMissingError",
    "TaskRef",
    "check_dataset_name",
    "check_task_data",
    "check_task_name",
    "class_order",
    "classnames",
    "data_root",
    "dataset_classnames",
    "dataset_names",
    "domains",
    "find_layout",
    "is_real",
    "load_split",
    "n_classes",
    "open_split",
    "parse_task",
    "task_classes",
    "templates",
]

#: Seed of every dataset's fixed class permutation for class-incremental splits.
CLASS_ORDER_SEED = 1993
SPLITS = ("train", "validation", "test")
#: Share of a real dataset's official training split held out as the validation split.
VALIDATION_FRACTION = 0.1
#: Salt of the validation hash: changing it would change every real train/validation split.
VALIDATION_SALT = "ww-validation-0"
#: Resolution of real images when the caller does not give the model's (every paper model is 224 px).
DEFAULT_RESOLUTION = 224
DATA_ROOT_ENV = "WW_DATA_ROOT"
DEFAULT_DATA_ROOT = "~/data"

# ---------------------------------------------------------------------------------------------
# Data root and layouts


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder real datasets are read from: ``explicit``, else ``$WW_DATA_ROOT``, else ``~/data``."""
    return Path(explicit or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


def find_layout(dataset: str, root: str | os.PathLike | None = None) -> DatasetLayout:
    """The first layout of ``dataset`` found complete under the data root.

    Raises :class:`DatasetMissingError` naming every accepted layout and how to obtain the data when
    none is there, :class:`DatasetMalformedError` with what is wrong when one is there but broken.
    """
    info = REAL_DATASETS[dataset]
    base = data_root(root)
    broken = []
    for layout in info.layouts:
        probe = layout.probe(base)
        if probe is not None and probe.ok:
            return layout
        if probe is not None:
            broken.append(f"{probe.detail}" + (f" → {probe.fix}" if probe.fix else ""))
    if broken:
        raise DatasetMalformedError(f"dataset {dataset} under {base} is not readable: " + "; ".join(broken))
    accepted = "\n  ".join(layout.expected() for layout in info.layouts)
    raise DatasetMissingError(
        f"dataset {dataset} not found under data root {base} (set --data-root or ${DATA_ROOT_ENV}). "
        f"Accepted layouts (relative to the data root):\n  {accepted}\nTo obtain it: {info.obtain} "
        f"(see docs/DATA.md; `python run_bench.py data check` lists every dataset)"
    )


def check_task_data(task: str, root: str | os.PathLike | None = None) -> None:
    """Fail before any work when a real task's data is missing or malformed (toy tasks always pass)."""
    ref = parse_task(task)
    if ref.dataset in REAL_DATASETS:
        find_layout(ref.dataset, root)
        dataset_classnames(ref.dataset, root)


# ---------------------------------------------------------------------------------------------
# Classes and prompts


def dataset_classnames(dataset: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Class names in label order; for Cars, SUN397, DomainNet and OfficeHome read from the data."""
    check_dataset_name(dataset)
    if dataset in TOY_TASKS:
        return TOY_TASKS[dataset].classnames
    shipped = REAL_DATASETS[dataset].shipped_classnames()
    if shipped is not None:
        return shipped
    return _classnames_on_disk(dataset, str(data_root(root).resolve()))


@lru_cache(maxsize=None)
def _classnames_on_disk(dataset: str, root: str) -> tuple[str, ...]:
    names = find_layout(dataset, root).classnames(Path(root))
    want = REAL_DATASETS[dataset].n_classes
    if names is None or len(names) != want:
        raise DatasetMalformedError(
            f"dataset {dataset} under {root}: found {0 if names is None else len(names)} classes, expected {want}"
        )
    return names


def class_order(dataset: str) -> list[int]:
    """The dataset's fixed class permutation (CIL splits are contiguous chunks of it)."""
    return [int(i) for i in np.random.default_rng(CLASS_ORDER_SEED).permutation(n_classes(dataset))]


def task_classes(task: str) -> list[int]:
    """Global class ids covered by ``task``, in the order of its head."""
    ref = parse_task(task)
    n = n_classes(ref.dataset)
    if ref.n_splits is None:
        return list(range(n))
    size = n // ref.n_splits
    return class_order(ref.dataset)[ref.split_index * size : (ref.split_index + 1) * size]


def classnames(task: str, root: str | os.PathLike | None = None) -> tuple[str, ...]:
    names = dataset_classnames(parse_task(task).dataset, root)
    return tuple(names[i] for i in task_classes(task))


def templates(task: str) -> tuple[str, ...]:
    dataset = parse_task(task).dataset
    if dataset in REAL_DATASETS:
        return REAL_DATASETS[dataset].prompt_templates()
    return TOY_TASKS[dataset].templates


# ---------------------------------------------------------------------------------------------
# Splits


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _restrict_to_task(task: str, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the examples of ``task``'s classes and their labels re-indexed into its head."""
    classes = task_classes(task)
    local = np.full(n_classes(parse_task(task).dataset), -1, dtype=np.int64)
    local[classes] = np.arange(len(classes))
    keep = np.flatnonzero(np.isin(labels, classes))
    return keep, local[labels[keep]]


def open_split(task: str, split: str, root: str | os.PathLike | None = None) -> Samples:
    """The examples of a real task's split, listed and labelled but not decoded.

    ``validation`` and ``train`` partition the official training split by a fixed hash of each
    example's identity, so the partition is the same on every machine and for every domain or
    class-incremental subset (the subset of a split is the split of the subset).
    """
    _check_split(split)
    ref = parse_task(task)
    if ref.dataset not in REAL_DATASETS:
        raise ValueError(f"{task}: open_split reads real datasets; toy tasks are generated (use load_split)")
    base = data_root(root)
    layout = find_layout(ref.dataset, base)
    if split == "test":
        samples = layout.read(base, "test", ref.domain)
    else:
        full = layout.read(base, "train", ref.domain)
        held_out = np.asarray([hash_fraction(k, VALIDATION_SALT) < VALIDATION_FRACTION for k in full.keys], dtype=bool)
        samples = full.take(np.flatnonzero(held_out if split == "validation" else ~held_out))
    if len(samples) and (samples.labels.min() < 0 or samples.labels.max() >= n_classes(ref.dataset)):
        raise DatasetMalformedError(
            f"{task} {split}: labels outside 0..{n_classes(ref.dataset) - 1} under {base}; is it the right dataset?"
        )
    if ref.n_splits is not None:
        keep, labels = _restrict_to_task(task, samples.labels)
        samples = samples.take(keep)
        samples.labels = labels
    if not len(samples):
        raise DatasetMalformedError(f"{task} {split}: no examples found under {base} ({layout.expected()})")
    return samples


def _toy_split(task: str, split: str, data: ToySizes | None) -> tuple[np.ndarray, np.ndarray]:
    ref = parse_task(task)
    source = TOY_TASKS[ref.dataset]
    kwargs = {"domain": ref.domain} if ref.domain is not None else {}
    if split == "validation":
        n_val = max(1, data.n_train // 10)
        images, labels = source.generate("train", data.n_train + n_val, data.seed, **kwargs)
        images, labels = images[data.n_train :], labels[data.n_train :]
    else:
        n = data.n_train if split == "train" else data.n_test
        images, labels = source.generate(split, n, data.seed, **kwargs)
    if ref.n_splits is None:
        return images, labels
    keep, local = _restrict_to_task(task, labels)
    return np.ascontiguousarray(images[keep]), local


def _resize_uint8(images: np.ndarray, resolution: int) -> np.ndarray:
    """Toy images at another model's resolution (a real CLIP run on the toy suite)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    y = F.interpolate(x, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).numpy()


def load_split(
    task: str,
    split: str,
    data: ToySizes | None,
    *,
    resolution: int | None = None,
    root: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 3, H, W] and int64 labels [N] (indices into ``classnames(task)``).

    Toy tasks are generated at 32 px (resized only if ``resolution`` asks for another size); real
    tasks are decoded at ``resolution`` (default 224) — everything in memory, so for whole real
    splits prefer ``benchmark.trials.eval_cache``, which streams them into a memory-mapped file once.
    """
    _check_split(split)
    ref = parse_task(task)
    if ref.dataset in TOY_TASKS:
        images, labels = _toy_split(task, split, data)
        if resolution is not None and resolution != TOY_IMAGE_SIZE:
            images = _resize_uint8(images, resolution)
        return images, labels
    from benchmark.data.images import decode_batches

    samples = open_split(task, split, root)
    size = resolution or DEFAULT_RESOLUTION
    images = np.empty((len(samples), 3, size, size), np.uint8)
    for offset, batch in decode_batches(
        samples.load, range(len(samples)), size, names=samples.keys, what=f"{task} {split} under {data_root(root)}"
    ):
        images[offset : offset + len(batch)] = batch
    return images, samples.labels.astype(np.int64)
