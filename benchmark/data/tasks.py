"""Task and dataset names: what a task string means and which datasets exist, without reading any data.

A pure catalogue (the toy suite's and the real datasets' names, classes and domains), so that spec
validation can check names offline; ``benchmark.data.loaders`` reads the data behind them.
Task strings are documented in ``benchmark.data.loaders``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from benchmark.data.catalog import REAL_DATASETS
from benchmark.toy.suite import TOY_TASKS

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
    return sorted(TOY_TASKS) + sorted(REAL_DATASETS)


def is_real(dataset: str) -> bool:
    """True for a dataset read from the data root, False for a toy one."""
    check_dataset_name(dataset)
    return dataset in REAL_DATASETS


def _suggest(name: str, valid: list[str]) -> str:
    by_case = [v for v in valid if v.lower() == name.lower()]
    close = by_case or difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_dataset_name(name: str) -> None:
    """Dataset names are case-sensitive: ``SUN397`` is real, ``digits`` is toy, ``sun397`` is neither."""
    if name not in TOY_TASKS and name not in REAL_DATASETS:
        raise ValueError(f"unknown dataset {name!r}{_suggest(name, dataset_names())}; known: {dataset_names()}")


def n_classes(dataset: str) -> int:
    """Number of classes, known without reading any data (specs are validated offline)."""
    check_dataset_name(dataset)
    return TOY_TASKS[dataset].num_classes if dataset in TOY_TASKS else REAL_DATASETS[dataset].n_classes


def parse_task(text: str) -> TaskRef:
    """Parse and validate a task string (see the module docstring)."""
    match = _TASK.match(text)
    if not match:
        raise ValueError(f"malformed task {text!r}; write DATASET, DATASET/DOMAIN or DATASET[I/N]")
    ref = TaskRef(match["dataset"], match["domain"], *(int(match[g]) if match[g] else None for g in ("i", "n")))
    check_dataset_name(ref.dataset)
    if ref.domain is not None and ref.domain not in domains(ref.dataset):
        known = list(domains(ref.dataset))
        raise ValueError(
            f"dataset {ref.dataset!r} has no domain {ref.domain!r}{_suggest(ref.domain, known)}; "
            f"domains: {known or 'none (single-domain dataset)'}"
        )
    if ref.n_splits is not None:
        n = n_classes(ref.dataset)
        if ref.n_splits < 2 or n % ref.n_splits:
            divisors = [d for d in range(2, n + 1) if n % d == 0]
            raise ValueError(
                f"{text}: {ref.dataset} has {n} classes; the number of class-incremental "
                f"splits must divide it (and be at least 2): choose one of {divisors}"
            )
        if not 0 <= ref.split_index < ref.n_splits:
            raise ValueError(f"{text}: split index must be in 0..{ref.n_splits - 1}")
    return ref


def check_task_name(text: str) -> None:
    parse_task(text)


def domains(dataset: str) -> tuple[str, ...]:
    """Domains of a multi-domain dataset (empty for a single-domain one)."""
    check_dataset_name(dataset)
    if dataset in REAL_DATASETS:
        return REAL_DATASETS[dataset].domains
    return tuple(getattr(TOY_TASKS[dataset], "domains", ()) or ())
