"""The storage root (DESIGN.md): one folder tree that holds every artifact of every run.

    <root>/cache/      θ0 of the toy model, eval tensors, zero-shot heads
    <root>/experts/    <model>/<pretrained>/<setup>/<seed>/<task>.safetensors + <task>.manifest.json
    <root>/results/    Parquet dataset, one part per trial (Hive partitions model=/setup=)
    <root>/runs/       Ray Train / Ray Tune state

All writes go through :func:`atomic_write`, so a killed process never leaves a half-written file
under a name a reader would take for a result.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def safe_name(text: str) -> str:
    """A path component made from user text (model names like ``ViT-B-32`` survive unchanged)."""
    return _SAFE.sub("_", text)


@dataclass(frozen=True)
class StorageRoot:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "StorageRoot":
        text = str(root)
        if "://" in text and not text.startswith("file://"):
            raise ValueError(
                f"storage root {text!r}: remote URIs (s3://, gs://) are not supported by this version; "
                "use a local or shared-filesystem path"
            )
        return cls(Path(text.removeprefix("file://")).expanduser().resolve())

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def experts(self) -> Path:
        return self.root / "experts"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def ensure(self) -> "StorageRoot":
        """Create the tree, failing early with a clear message when the root is not writable."""
        try:
            for path in (self.cache, self.experts, self.results, self.runs):
                path.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise PermissionError(
                f"storage root {self.root} is not writable ({exc.strerror}); pass --root with a directory you can write"
            ) from exc
        return self


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path`` (atomic on POSIX).

    The temporary name starts with a dot, which pyarrow's dataset discovery ignores, so a crash
    mid-write leaves debris that no reader mistakes for a result.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
