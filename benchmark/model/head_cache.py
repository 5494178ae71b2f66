"""Zero-shot heads, computed once per (θ0, dataset) and cached as safetensors.

A head depends on the text tower (which is never fine-tuned), the class names and the templates,
so it is shared by every expert, merge and trial of that θ0. The key is exactly that content
(θ0's key + class names + templates + the head code's revision, ``heads`` of
`benchmark.spec.keys.REVISIONS`): the DG tasks ``DomainNet/clipart`` ... ``DomainNet/sketch``
share one head file, a class-incremental split ``CIFAR100[3/20]`` has its own (its classes only)
and the joint CIL task ``CIFAR100`` covers every class. Files are named after the dataset, so the
cache folder reads as a list of datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmark.data import loaders as data
from benchmark.model.heads import zeroshot_head
from benchmark.model.pretrained import LoadedModel
from benchmark.results.storage import StorageRoot, atomic_write, safe_name
from benchmark.spec.keys import content_key, revision


def head_path(storage: StorageRoot, base_key: str, dataset: str, root: str | os.PathLike | None = None) -> Path:
    """Cache file of the head of task ``dataset`` (named by its dataset, keyed by its content)."""
    key = content_key(
        "head",
        {
            "base": base_key,
            "classnames": data.classnames(dataset, root),
            "templates": data.templates(dataset),
            "revision": revision("heads"),
        },
    )
    return storage.cache / "heads" / base_key / f"{safe_name(data.parse_task(dataset).dataset)}-{key}.safetensors"


def load_head(
    storage: StorageRoot, base: LoadedModel, dataset: str, root: str | os.PathLike | None = None
) -> torch.Tensor:
    """The [C, D] head of task ``dataset`` for θ0 ``base``, computing and caching it if needed."""
    path = head_path(storage, base.key, dataset, root)
    if path.exists():
        return load_file(str(path))["head"]
    head = zeroshot_head(base.model, base.tokenizer, data.classnames(dataset, root), data.templates(dataset))
    with atomic_write(path) as tmp:
        save_file({"head": head.contiguous()}, str(tmp))
    return head
