"""Experts on disk: image-encoder weights as safetensors plus a JSON manifest beside them.

The manifest is written last and carries the expert's content key, so "the manifest exists and its
key matches" is the single test for "this expert is done" — a weights file without its manifest
is an interrupted write and is ignored. On an object store each file is one complete object and
the manifest is still the last one written, so a reader never takes half an expert for a whole.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, load_file, save_file

from benchmark.plan import ExpertJob
from benchmark.storage import RootPath, StorageRoot, atomic_write, write_text_atomic


def read_manifest(job: ExpertJob, storage: StorageRoot) -> dict[str, Any] | None:
    path = job.manifest_path(storage)
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if manifest.get("key") != job.key or not job.path(storage).exists():
        return None
    return manifest


def is_done(job: ExpertJob, storage: StorageRoot) -> bool:
    return read_manifest(job, storage) is not None


def save_expert(job: ExpertJob, storage: StorageRoot, visual_state: dict[str, torch.Tensor], metrics: dict) -> None:
    with atomic_write(job.path(storage)) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in visual_state.items()}, str(tmp),
                  metadata={"key": job.key, "task": job.task})
    manifest = {
        "key": job.key,
        "task": job.task,
        "setup": job.setup,
        "seed": job.seed,
        "model": job.model,
        "base_key": job.base_key,
        "data": job.data,
        "finetune": job.finetune,
        "metrics": metrics,
        "host": socket.gethostname(),
        "finished_at": time.time(),
    }
    write_text_atomic(job.manifest_path(storage), json.dumps(manifest, indent=1, sort_keys=True))


def load_weights(path: Path | RootPath) -> dict[str, torch.Tensor]:
    """A safetensors file of the store: memory-mapped from a disk, read in one GET from an object store."""
    if isinstance(path, RootPath) and path.fs.type_name != "local":
        return load(path.read_bytes())
    return load_file(path.path if isinstance(path, RootPath) else str(path))


def load_expert(job: ExpertJob, storage: StorageRoot) -> dict[str, torch.Tensor]:
    if not is_done(job, storage):
        raise FileNotFoundError(f"expert {job.task} (key {job.key}) is not in {job.path(storage).parent}")
    return load_weights(job.path(storage))
