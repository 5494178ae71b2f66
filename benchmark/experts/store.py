"""Experts on disk: image-encoder weights as safetensors plus a JSON manifest beside them.

The manifest is written last and carries the expert's content key, so "the manifest exists and its
key matches" is the single test for "this expert is done" — a weights file without its manifest
is an interrupted write and is ignored. On an object store each file is one complete object and
the manifest is still the last one written, so a reader never takes half an expert for a whole.

The manifest also records the weights file's size and SHA-256: a file truncated or altered after it
was published (a bad copy, a failing disk) is refused with the expert named, never merged.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, load_file, save_file

from benchmark.results.storage import RootPath, StorageRoot, atomic_write, write_text_atomic
from benchmark.spec.plan import ExpertJob


class CorruptExpertError(ValueError):
    """A stored expert whose weights file cannot be trusted; the message names it and how to re-train it."""


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
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in visual_state.items()},
            str(tmp),
            metadata={"key": job.key, "task": job.task},
        )
        with open(tmp, "rb") as written:
            digest, size = _sha256(written)
    manifest = {
        "key": job.key,
        "sha256": digest,
        "bytes": size,
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


def _sha256(stream) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(1 << 23):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _corrupt(job: ExpertJob, storage: StorageRoot, detail: str) -> CorruptExpertError:
    return CorruptExpertError(
        f"expert {job.task} (seed {job.seed}) at {job.path(storage)} is corrupt: {detail}; delete it and "
        f"{job.manifest_path(storage)} and run the spec again to re-train it"
    )


def check_readable(job: ExpertJob, storage: StorageRoot) -> None:
    """Cheap check of a stored expert before any work: the size the manifest recorded, a parsable header.

    Catches truncated and overwritten files without reading the weights (the bank build later
    verifies the checksum and the values)."""
    from safetensors import SafetensorError, safe_open

    manifest = read_manifest(job, storage)
    if manifest is None:
        return
    path = job.path(storage)
    if isinstance(path, RootPath) and path.fs.type_name != "local":
        return  # an object store: the header would cost a download; the bank build checks it
    local = path.path if isinstance(path, RootPath) else str(path)
    size = Path(local).stat().st_size
    if manifest.get("bytes") is not None and size != manifest["bytes"]:
        raise _corrupt(job, storage, f"{size} bytes on disk, {manifest['bytes']} written (truncated or overwritten)")
    try:
        with safe_open(local, framework="pt") as handle:
            handle.keys()
    except SafetensorError as exc:
        raise _corrupt(job, storage, f"not a readable safetensors file ({exc})") from None


def load_expert(job: ExpertJob, storage: StorageRoot) -> dict[str, torch.Tensor]:
    """The expert's weights, after checking them against the size and checksum of its manifest."""
    from safetensors import SafetensorError

    manifest = read_manifest(job, storage)
    if manifest is None:
        raise FileNotFoundError(f"expert {job.task} (key {job.key}) is not in {job.path(storage).parent}")
    path = job.path(storage)
    remote = isinstance(path, RootPath) and path.fs.type_name != "local"
    data = path.read_bytes() if remote else None  # one GET, hashed and parsed from memory
    if manifest.get("sha256") is not None:  # manifests written before checksums existed have none
        if data is not None:
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
        else:
            with open(path.path if isinstance(path, RootPath) else path, "rb") as stream:
                digest, size = _sha256(stream)
        if size != manifest.get("bytes", size):
            raise _corrupt(job, storage, f"{size} bytes stored, {manifest['bytes']} written (truncated or overwritten)")
        if digest != manifest["sha256"]:
            raise _corrupt(job, storage, "its SHA-256 differs from the one recorded when it was written")
    try:
        return load(data) if data is not None else load_weights(path)
    except SafetensorError as exc:
        raise _corrupt(job, storage, f"not a readable safetensors file ({exc})") from None
