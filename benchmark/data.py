"""The dataset registry: task name → class names, prompt templates and labelled splits.

A *task* is what one expert is fine-tuned on and what one evaluation reads, written as a string:

    digits                a whole dataset (MTL task, or the joint CIL evaluation)
    digits[2/5]           class-incremental split 2 of 5: a contiguous chunk of the dataset's fixed
                          class permutation, labels re-indexed within the split (its own head)
    toydomains/sketch     one domain of a multi-domain dataset (DG: all classes, that domain only)

This version registers the embedded toy suite (generated deterministically, no download); real
datasets under a data root plug in behind the same functions.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from benchmark.toy import TOY_TASKS

if TYPE_CHECKING:
    from benchmark.specs import DataSpec

#: Seed of every dataset's fixed class permutation for class-incremental splits.
CLASS_ORDER_SEED = 1993

_TASK = re.compile(r"^(?P<dataset>[A-Za-z0-9_.-]+)(?:/(?P<domain>[A-Za-z0-9_.-]+))?(?:\[(?P<i>\d+)/(?P<n>\d+)\])?$")


@dataclass(frozen=True)
class TaskRef:
    dataset: str
    domain: str | None = None
    split_index: int | None = None
    n_splits: int | None = None

    def __str__(self) -> str:
        text = self.dataset + (f"/{self.domain}" if self.domain else "")
        return text + (f"[{self.split_index}/{self.n_splits}]" if self.n_splits else "")


def dataset_names() -> list[str]:
    return sorted(TOY_TASKS)


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_dataset_name(name: str) -> None:
    if name not in TOY_TASKS:
        raise ValueError(f"unknown dataset {name!r}{_suggest(name, dataset_names())}; known: {dataset_names()}")


def parse_task(text: str) -> TaskRef:
    """Parse and validate a task string (see the module docstring)."""
    match = _TASK.match(text)
    if not match:
        raise ValueError(f"malformed task {text!r}; write DATASET, DATASET/DOMAIN or DATASET[I/N]")
    ref = TaskRef(match["dataset"], match["domain"], *(int(match[g]) if match[g] else None for g in ("i", "n")))
    check_dataset_name(ref.dataset)
    if ref.domain is not None and ref.domain not in domains(ref.dataset):
        known = list(domains(ref.dataset))
        raise ValueError(f"dataset {ref.dataset!r} has no domain {ref.domain!r}{_suggest(ref.domain, known)}; "
                         f"domains: {known or 'none (single-domain dataset)'}")
    if ref.n_splits is not None:
        n_classes = len(dataset_classnames(ref.dataset))
        if ref.n_splits < 2 or n_classes % ref.n_splits:
            raise ValueError(f"{text}: {ref.dataset} has {n_classes} classes; the number of class-incremental "
                             f"splits must divide it (and be at least 2)")
        if not 0 <= ref.split_index < ref.n_splits:
            raise ValueError(f"{text}: split index must be in 0..{ref.n_splits - 1}")
    return ref


def check_task_name(text: str) -> None:
    parse_task(text)


def dataset_classnames(dataset: str) -> tuple[str, ...]:
    check_dataset_name(dataset)
    return TOY_TASKS[dataset].classnames


def domains(dataset: str) -> tuple[str, ...]:
    """Domains of a multi-domain dataset (empty for a single-domain one)."""
    check_dataset_name(dataset)
    return tuple(getattr(TOY_TASKS[dataset], "domains", ()) or ())


def class_order(dataset: str) -> list[int]:
    """The dataset's fixed class permutation (CIL splits are contiguous chunks of it)."""
    n = len(dataset_classnames(dataset))
    return [int(i) for i in np.random.default_rng(CLASS_ORDER_SEED).permutation(n)]


def task_classes(task: str) -> list[int]:
    """Global class ids covered by ``task``, in the order of its head."""
    ref = parse_task(task)
    n = len(dataset_classnames(ref.dataset))
    if ref.n_splits is None:
        return list(range(n))
    size = n // ref.n_splits
    return class_order(ref.dataset)[ref.split_index * size:(ref.split_index + 1) * size]


def classnames(task: str) -> tuple[str, ...]:
    names = dataset_classnames(parse_task(task).dataset)
    return tuple(names[i] for i in task_classes(task))


def templates(task: str) -> tuple[str, ...]:
    return TOY_TASKS[parse_task(task).dataset].templates


def load_split(task: str, split: str, data: "DataSpec") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 3, H, W] and int64 labels [N] (indices into ``classnames(task)``)."""
    ref = parse_task(task)
    n = data.n_train if split == "train" else data.n_test
    source = TOY_TASKS[ref.dataset]
    if ref.domain is not None:
        images, labels = source.generate(split, n, data.seed, domain=ref.domain)
    else:
        images, labels = source.generate(split, n, data.seed)
    if ref.n_splits is None:
        return images, labels
    classes = task_classes(task)
    local = {c: i for i, c in enumerate(classes)}
    keep = np.isin(labels, classes)
    return np.ascontiguousarray(images[keep]), np.array([local[int(c)] for c in labels[keep]], dtype=np.int64)
