"""The task-vector bank of one (model, setup, seed): τ_t = θ_t − θ0 stacked once as ``[T, P]``.

Two routes to the trials (``resources.bank_route``), both built by streaming the experts one at a
time — load, check, subtract θ0 in place, copy into the output, drop — so the builder never holds
more than one expert next to the bank it writes:

- **object store** (:class:`SharedBank`): the rows go into one preallocated numpy array that is
  ``ray.put`` once; every trial on a node reads the same shared-memory buffer zero-copy. Torch
  tensors are deliberately not sent through Ray: its pickler copies them per reader, numpy arrays
  it maps.
- **file** (:class:`BankFile`): the rows go into a ``ww`` bank file (``ww.BankWriter``, the layout
  ``ww.open_bank`` maps) in the node-local cache, ``<cache>/banks/<bank key>.bank``. Trials map
  it read-only, so every trial process of a node shares the page cache, and ``ww`` merges it out
  of core (resident memory bounded by the blocks in flight, whatever the bank's size). The file
  is content-addressed and verified before use (size, SHA-256 of its data, checked against what
  the driver built); a node that lacks it, or holds a damaged copy, builds its own from the
  experts under a per-node lock, and refuses to use it unless it has the same bytes.

``auto`` takes the file route when a bank is larger than ``bank_store_fraction`` of the object
store of the smallest node (every node's trials may read every bank): a bank that crowds the store
would be spilled to disk by Ray, and several trial actors each unpickling from a spilled object
cost more memory than one shared page cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import struct
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import ww
from benchmark.experts import store as expert_store
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import ExpertJob
from ww.layout import layout_numel, layout_slices, normalize_layout

ROUTES = ("auto", "object_store", "file")
#: Ray's own default for a node's object store: this share of the memory available when Ray starts.
RAY_DEFAULT_STORE_SHARE = 0.3
_HASH_CHUNK = 8 << 20


class BankFileError(ValueError):
    """A bank file that cannot be trusted and could not be rebuilt; the message says what to do."""


# --- which route ------------------------------------------------------------------------------------


def choose_route(route: str, fraction: float, bank_bytes: int, store_bytes: int | None) -> str:
    """``object_store`` or ``file`` for one bank; ``auto`` with an unknown store size takes the file."""
    if route not in ROUTES:
        raise ValueError(f"bank_route must be one of {ROUTES}, got {route!r}")
    if route != "auto":
        return route
    if store_bytes is None:
        return "file"
    return "file" if bank_bytes > fraction * store_bytes else "object_store"


def object_store_capacity() -> tuple[int | None, str]:
    """Bytes of the object store of the smallest Ray node, and where the figure comes from.

    With Ray running: what the nodes report. Without it (``--dry-run``, the plan before ``ray.init``):
    Ray's default for a local session, 30 % of this machine's available memory; unknown when the
    run will join a cluster (``RAY_ADDRESS``).
    """
    try:
        import ray

        if ray.is_initialized():
            sizes = [n["Resources"].get("object_store_memory") for n in ray.nodes() if n.get("Alive")]
            sizes = [int(s) for s in sizes if s]
            if sizes:
                return min(sizes), "Ray's object store" + (" (smallest node)" if len(sizes) > 1 else "")
            total = ray.cluster_resources().get("object_store_memory")
            return (int(total), "Ray's object store") if total else (None, "unknown")
    except ImportError:  # pragma: no cover - Ray is a dependency of the harness
        pass
    if os.environ.get("RAY_ADDRESS"):
        return None, "the cluster's object store (known once Ray is joined)"
    available = available_memory()
    if available is None:
        return None, "unknown"
    return int(RAY_DEFAULT_STORE_SHARE * available), "estimated: Ray's default, 30 % of available memory"


def available_memory() -> int | None:
    """``MemAvailable`` of this machine (Linux), else None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- the object-store route -------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedBank:
    """What travels to trials: the flat numpy data plus the layout and task names to rebuild it."""

    data: np.ndarray
    layout: tuple[tuple[str, tuple[int, ...]], ...]
    task_names: tuple[str, ...]

    def to_ww(self) -> ww.TaskVectorBank:
        """A ``ww`` bank viewing the (read-only, shared) numpy buffer without copying it."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            data = torch.from_numpy(self.data)
        return ww.TaskVectorBank.from_flat(data, self.layout, self.task_names)


def _layout(theta0_visual: dict[str, torch.Tensor]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The bank's layout: θ0's float entries in its key order (what ``ww.task_vector`` keeps)."""
    return tuple((name, tuple(t.shape)) for name, t in theta0_visual.items() if t.is_floating_point())


def _bank_dtype(theta0_visual: dict[str, torch.Tensor]) -> torch.dtype:
    dtypes = {t.dtype for t in theta0_visual.values() if t.is_floating_point()}
    if len(dtypes) != 1:
        raise ValueError(f"θ0's image encoder mixes float dtypes {sorted(map(str, dtypes))}; a bank holds one")
    return dtypes.pop()


def _load_task_vector(job: ExpertJob, theta0_visual: dict[str, torch.Tensor], storage: StorageRoot) -> dict:
    """τ of one expert, computed in the expert's own tensors (no second copy of the encoder)."""
    from benchmark.model.pretrained import check_image_encoder_state

    # checksum, architecture, shapes, dtypes, finiteness: refused here, before any trial starts
    state = expert_store.load_expert(job, storage)
    check_image_encoder_state(state, theta0_visual, what=f"expert {job.task} (seed {job.seed}) at {job.path(storage)}")
    return {name: state[name].sub_(base) for name, base in theta0_visual.items() if base.is_floating_point()}


def build_bank(jobs: list[ExpertJob], theta0_visual: dict[str, torch.Tensor], storage: StorageRoot) -> SharedBank:
    """The bank in memory, for the object-store route: one ``[T, P]`` array, filled expert by expert."""
    layout = _layout(theta0_visual)
    pieces = layout_slices(normalize_layout(layout))
    dtype = torch.empty((), dtype=_bank_dtype(theta0_visual)).numpy().dtype
    data = np.empty((len(jobs), layout_numel(normalize_layout(layout))), dtype=dtype)

    def fill(row: int, job: ExpertJob) -> None:  # one expert alive at a time: freed on return
        tau = _load_task_vector(job, theta0_visual, storage)
        for name, piece in pieces.items():
            data[row, piece] = tau[name].reshape(-1).numpy()

    for row, job in enumerate(jobs):
        fill(row, job)
    return SharedBank(data=data, layout=layout, task_names=tuple(job.task for job in jobs))


# --- the file route ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BankFile:
    """What travels to trials on the file route: how to find, check and (re)build the node's copy."""

    key: str
    jobs: tuple[dict, ...]
    bytes: int
    data_sha256: str

    def path(self, storage: StorageRoot) -> Path:
        return bank_file_path(storage, self.key)

    def open(
        self, storage: StorageRoot, theta0_visual: dict[str, torch.Tensor], log: Callable[[str], None] | None = None
    ) -> ww.TaskVectorBank:
        """This node's copy, memory-mapped: verified, or built from the experts if missing or damaged."""
        path = ensure_bank_file(
            [ExpertJob(**job) for job in self.jobs],
            theta0_visual,
            storage,
            self.key,
            expected=(self.bytes, self.data_sha256),
            log=log,
        )
        return ww.open_bank(path)


def bank_file_path(storage: StorageRoot, key: str) -> Path:
    return Path(storage.cache) / "banks" / f"{key}.bank"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


@contextlib.contextmanager
def _node_lock(path: Path):
    """One builder per node and bank: the others wait, then find the file built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _data_digest(path: Path) -> tuple[str, int]:
    """SHA-256 of a bank file's data section (after its safetensors header), and the file's size."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            return "", os.path.getsize(path)
        (header,) = struct.unpack("<Q", prefix)
        handle.seek(8 + header)
        digest = hashlib.sha256()
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest(), os.path.getsize(path)


def _write_bank_file(
    jobs: list[ExpertJob], theta0_visual: dict[str, torch.Tensor], storage: StorageRoot, path: Path
) -> tuple[int, str]:
    """Stream the experts into ``path`` (temp + rename); returns (bytes, SHA-256 of the data)."""
    layout = _layout(theta0_visual)
    digest = hashlib.sha256()
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    writer = ww.BankWriter(temporary, layout, [job.task for job in jobs], _bank_dtype(theta0_visual))

    def add(job: ExpertJob) -> None:  # one expert alive at a time: freed on return
        tau = _load_task_vector(job, theta0_visual, storage)
        for name, _ in layout:
            flat = tau[name].reshape(-1)
            digest.update(flat.numpy())
            writer.write(flat)

    try:
        for job in jobs:
            add(job)
        writer.close()
        size = os.path.getsize(temporary)
        os.replace(temporary, path)
    except BaseException:
        writer.abort()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _record(path, size, digest.hexdigest())
    return size, digest.hexdigest()


def _record(path: Path, size: int, sha: str) -> None:
    """Note beside the file which bytes it holds and that they were checked at this size and mtime."""
    stat = path.stat()
    record = {"bytes": size, "data_sha256": sha, "checked_size": stat.st_size, "checked_mtime_ns": stat.st_mtime_ns}
    tmp = _sidecar(path).with_name(f".tmp-{uuid.uuid4().hex[:8]}-{_sidecar(path).name}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, _sidecar(path))


def _verified(path: Path) -> tuple[int, str] | None:
    """(bytes, data SHA-256) of a bank file on this node, or None when absent or damaged.

    The sidecar's digest is trusted while the file keeps the size and mtime it had when checked;
    otherwise the data is hashed again and must still match it.
    """
    if not path.exists():
        return None
    try:
        record = json.loads(_sidecar(path).read_text())
        stat = path.stat()
        if stat.st_size != record["bytes"]:
            return None
        if (stat.st_size, stat.st_mtime_ns) == (record["checked_size"], record["checked_mtime_ns"]):
            return record["bytes"], record["data_sha256"]
        sha, size = _data_digest(path)
        if (size, sha) != (record["bytes"], record["data_sha256"]):
            return None
        _record(path, size, sha)
        return size, sha
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_bank_file(
    jobs: list[ExpertJob],
    theta0_visual: dict[str, torch.Tensor],
    storage: StorageRoot,
    key: str,
    *,
    expected: tuple[int, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The bank file of ``key`` on this node, built (streaming) unless a verified copy is there.

    ``expected`` is the (bytes, data SHA-256) the driver built: a copy that differs (damaged,
    truncated, stale) is rebuilt, and a rebuild that still differs is refused. Without it (the
    driver) whatever verifies against its own record is used, and anything else rebuilt.
    """
    path = bank_file_path(storage, key)
    with _node_lock(path):
        found = _verified(path)
        if found is not None and (expected is None or found == tuple(expected)):
            return path
        if path.exists() and log is not None:
            log(f"bank file {path} is damaged or differs from the one the run built; rebuilding it from the experts")
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        built = _write_bank_file(jobs, theta0_visual, storage, path)
        if expected is not None and built != tuple(expected):
            path.unlink(missing_ok=True)
            _sidecar(path).unlink(missing_ok=True)
            raise BankFileError(
                f"bank file {path} built on this node ({built[0]} bytes, data SHA-256 {built[1][:12]}…) differs from "
                f"the driver's ({expected[0]} bytes, {expected[1][:12]}…): the experts or θ0 differ between nodes; "
                "check that every node reads the same storage root and cache, then run the spec again"
            )
        return path


def build_bank_file(
    jobs: list[ExpertJob],
    theta0_visual: dict[str, torch.Tensor],
    storage: StorageRoot,
    key: str,
    log: Callable[[str], None] | None = None,
) -> BankFile:
    """Build (or verify) the driver's copy of the bank file; what trials need to find their own."""
    path = ensure_bank_file(jobs, theta0_visual, storage, key, log=log)
    size, sha = _verified(path) or (None, None)
    if size is None:  # pragma: no cover - just written and recorded
        raise BankFileError(f"bank file {path} could not be verified right after it was written; check the disk")
    return BankFile(key=key, jobs=tuple(dataclasses.asdict(job) for job in jobs), bytes=size, data_sha256=sha)


def open_for_trial(
    shared: SharedBank | BankFile,
    storage: StorageRoot,
    theta0_visual: dict[str, torch.Tensor],
    log: Callable[[str], None] | None = None,
) -> ww.TaskVectorBank:
    """The ``ww`` bank a trial merges, whichever route it came by."""
    if isinstance(shared, BankFile):
        return shared.open(storage, theta0_visual, log=log)
    return shared.to_ww()
