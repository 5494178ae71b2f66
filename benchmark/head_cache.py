"""Zero-shot heads, computed once per (θ0, dataset) and cached as safetensors.

A head depends on the text tower (which is never fine-tuned), the class names and the templates,
so it is shared by every expert, merge and trial of that θ0.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from benchmark import data
from benchmark.heads import zeroshot_head
from benchmark.keys import content_key
from benchmark.models import BaseModel
from benchmark.storage import StorageRoot, atomic_write, safe_name


def head_path(storage: StorageRoot, base_key: str, dataset: str):
    key = content_key(
        "head", {"base": base_key, "classnames": data.classnames(dataset), "templates": data.templates(dataset)}
    )
    return storage.cache / "heads" / base_key / f"{safe_name(dataset)}-{key}.safetensors"


def load_head(storage: StorageRoot, base: BaseModel, dataset: str) -> torch.Tensor:
    """The [C, D] head of ``dataset`` for θ0 ``base``, computing and caching it if needed."""
    path = head_path(storage, base.key, dataset)
    if path.exists():
        return load_file(str(path))["head"]
    head = zeroshot_head(base.model, base.tokenizer, data.classnames(dataset), data.templates(dataset))
    with atomic_write(path) as tmp:
        save_file({"head": head.contiguous()}, str(tmp))
    return head
