"""The dataset registry: task name → class names, prompt templates and labelled splits.

This version registers the embedded toy suite (generated deterministically, no download); real
datasets under a data root plug in behind the same three functions.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

import numpy as np

from benchmark.toy import TOY_TASKS

if TYPE_CHECKING:
    from benchmark.specs import DataSpec


def dataset_names() -> list[str]:
    return sorted(TOY_TASKS)


def check_dataset_name(name: str) -> None:
    if name not in TOY_TASKS:
        close = difflib.get_close_matches(name, list(TOY_TASKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; known: {dataset_names()}")


def classnames(name: str) -> tuple[str, ...]:
    check_dataset_name(name)
    return TOY_TASKS[name].classnames


def templates(name: str) -> tuple[str, ...]:
    check_dataset_name(name)
    return TOY_TASKS[name].templates


def load_split(name: str, split: str, data: "DataSpec") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 3, H, W] and int64 labels [N] of one split."""
    check_dataset_name(name)
    n = data.n_train if split == "train" else data.n_test
    return TOY_TASKS[name].generate(split, n, data.seed)
