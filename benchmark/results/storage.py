"""The storage root (docs/DESIGN.md): one tree that holds every artifact of every run.

    <root>/cache/      θ0 of the toy model, eval tensors, zero-shot heads
    <root>/experts/    <model>/<pretrained>/<setup>/<seed>/<task>.safetensors + <task>.manifest.json
    <root>/results/    Parquet dataset, one part per trial (Hive partitions model=/setup=)
    <root>/runs/       Ray Train / Ray Tune state

The root is a local path or a URI ``pyarrow.fs`` understands (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///abs/path``). Two kinds of content need two homes:

- **Durable artifacts** (experts, results, run state) live in the root. Under a URI they are
  :class:`RootPath` objects and every byte goes through the root's ``pyarrow.fs`` filesystem;
  Ray Train/Tune get the URI itself as ``storage_path``.
- **The cache** is memory-mapped by trials, so it must be local files. Under a local path or a
  ``file://`` URI it is ``<root>/cache``; under an object store it is a node-local directory
  (``$WW_CACHE_DIR``, else ``~/.cache/ww/<hash of the root>``) that each node fills once. The part
  of it that must be the same bytes on every node (θ0, heads, zero-shot results) is published to
  ``<root>/cache`` when written and fetched from there before anything rebuilds it.

Every write goes through :func:`atomic_write`, so a killed process never leaves a half-written
file under a name a reader would take for a result: temp + rename where the filesystem renames
atomically, one complete PUT on object stores (an object becomes visible whole, or not at all).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PosixPath, PurePosixPath
from typing import Callable, Iterator

import pyarrow.fs as pafs

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")

#: ``FileSystem.type_name`` of filesystems whose rename is atomic; anything else is written as one object.
_RENAMING = frozenset({"local", "hdfs"})

#: Cache subfolders that every node must share bit for bit (θ0 of the toy, heads, zero-shot results);
#: the eval tensors are deterministic and large, so each node rebuilds its own.
SHARED_CACHE = ("pretrained", "heads", "zeroshot")

_COPY_CHUNK = 8 << 20


def safe_name(text: str) -> str:
    """A path component made from user text (model names like ``ViT-B-32`` survive unchanged)."""
    return _SAFE.sub("_", text)


def _hidden(name: str) -> bool:
    """Temp files and probes start with a dot; readers (and pyarrow's discovery) skip them."""
    return name.startswith((".", "_"))


class RootPath:
    """A file or folder inside a URI storage root, with the slice of ``pathlib.Path`` callers use.

    Code written against ``Path`` (``/``, ``name``, ``with_suffix``, ``exists()``, ``read_text()``)
    keeps working under ``s3://``; ``str()`` is the URI (the root's own text, so a host, port or
    query survives), which Ray's ``storage_path`` and :meth:`StorageRoot.at` accept.
    """

    __slots__ = ("fs", "path", "_root_path", "_root_uri", "_query")

    def __init__(self, fs: pafs.FileSystem, path: str, root_path: str, root_uri: str, query: str = ""):
        self.fs, self.path = fs, path.rstrip("/") or "/"
        self._root_path, self._root_uri, self._query = root_path, root_uri, query

    def _with(self, path: PurePosixPath | str) -> "RootPath":
        return RootPath(self.fs, str(path), self._root_path, self._root_uri, self._query)

    def __truediv__(self, part: str) -> "RootPath":
        return self._with(PurePosixPath(self.path) / str(part))

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    @property
    def parent(self) -> "RootPath":
        return self._with(PurePosixPath(self.path).parent)

    def with_name(self, name: str) -> "RootPath":
        return self._with(PurePosixPath(self.path).with_name(name))

    def with_suffix(self, suffix: str) -> "RootPath":
        return self._with(PurePosixPath(self.path).with_suffix(suffix))

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.File

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.readall()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def __str__(self) -> str:
        inside = self.path[len(self._root_path) :] if self.path.startswith(self._root_path) else f"/{self.path}"
        return f"{self._root_uri}{inside}" + (f"?{self._query}" if self._query else "")

    def __repr__(self) -> str:
        return f"RootPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RootPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def filesystem_path(path: Path | RootPath) -> tuple[pafs.FileSystem, str]:
    """The ``(filesystem, path)`` pair pyarrow readers and writers take, for either kind of path."""
    if isinstance(path, RootPath):
        return path.fs, path.path
    return pafs.LocalFileSystem(), str(path)


def list_files(folder: Path | RootPath, suffix: str = "") -> list[Path | RootPath]:
    """Every visible file under ``folder`` (recursively) ending in ``suffix``, sorted; [] if absent."""
    fs, base = filesystem_path(folder)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    found = []
    for info in infos:
        relative = (
            PurePosixPath(info.path).relative_to(PurePosixPath(base)) if base != "/" else PurePosixPath(info.path)
        )
        if info.type != pafs.FileType.File or not info.path.endswith(suffix):
            continue
        if any(_hidden(part) for part in relative.parts):
            continue
        found.append(folder / str(relative) if isinstance(folder, RootPath) else Path(info.path))
    return sorted(found, key=str)


# --- the shared part of a node-local cache ----------------------------------------------------------

_MIRRORS: dict[Path, RootPath] = {}  # local cache directory → <root>/cache, per process


def _mirror_of(path: Path) -> RootPath | None:
    """Where ``path`` (a file in a registered local cache) is kept in the root, if it is shared."""
    if _hidden(path.name):
        return None
    for local, remote in _MIRRORS.items():
        try:
            relative = path.relative_to(local)
        except ValueError:
            continue
        if relative.parts and relative.parts[0] in SHARED_CACHE:
            return remote / relative.as_posix()
    return None


class CachePath(PosixPath):
    """A path in a node-local cache whose shared entries also live in the (remote) storage root.

    ``exists()`` is how every cache reader decides between "load" and "build", so a miss here
    first fetches the entry from ``<root>/cache``: a node uses the θ0 and heads another node
    built, never a rebuild that could differ in the last bit. :func:`atomic_write` publishes.
    """

    def exists(self, *args, **kwargs) -> bool:
        if super().exists(*args, **kwargs):
            return True
        remote = _mirror_of(self)
        if remote is None or not remote.is_file():
            return False
        _download(remote, self)
        return True


def _download(source: RootPath, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        with source.fs.open_input_stream(source.path) as stream, open(tmp, "wb") as out:
            while chunk := stream.read(_COPY_CHUNK):
                out.write(chunk)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- the root --------------------------------------------------------------------------------------


def _cloud_credentials_missing(scheme: str, uri: str) -> str | None:
    """Why an ``s3://``/``gs://`` root cannot work from here, found without touching the network.

    pyarrow would otherwise discover missing credentials only after its retries against the
    cloud, as a C++ error several lines long; this looks where the SDKs look (environment,
    config files, a cloud VM's identity) and names the fix.
    """
    home = Path.home()
    authority = uri.split("://", 1)[1].split("/", 1)[0]
    if "anonymous=true" in uri.lower() or "@" in authority:  # a public bucket, or key:secret@bucket
        return None
    if scheme == "s3":
        env = (
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
        files = (
            os.environ.get("AWS_SHARED_CREDENTIALS_FILE", home / ".aws" / "credentials"),
            os.environ.get("AWS_CONFIG_FILE", home / ".aws" / "config"),
        )
        if any(os.environ.get(k) for k in env) or any(Path(f).is_file() for f in files) or _on_cloud_vm("Amazon"):
            return None
        return (
            "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "run on an instance with an IAM role, or add ?anonymous=true for a public bucket"
        )
    if scheme in ("gs", "gcs"):
        adc = home / ".config" / "gcloud" / "application_default_credentials.json"
        if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or adc.is_file() or _on_cloud_vm("Google"):
            return None
        return (
            "no Google Cloud credentials found; set GOOGLE_APPLICATION_CREDENTIALS to a key file, run "
            "`gcloud auth application-default login`, or run on a VM with a service account"
        )
    return None


def _on_cloud_vm(vendor: str) -> bool:
    """A cloud VM serves credentials from its metadata service; its firmware says which cloud it is."""
    for name in ("/sys/class/dmi/id/sys_vendor", "/sys/class/dmi/id/board_vendor", "/sys/class/dmi/id/product_name"):
        with contextlib.suppress(OSError):
            if vendor.lower() in Path(name).read_text().lower():
                return True
    with contextlib.suppress(OSError):
        return vendor == "Amazon" and Path("/sys/hypervisor/uuid").read_text().lower().startswith("ec2")
    return False


def default_cache_dir(location: str) -> Path:
    """The node-local cache of a remote root: ``$WW_CACHE_DIR``, else one folder per root under ~/.cache."""
    if os.environ.get("WW_CACHE_DIR"):
        return Path(os.environ["WW_CACHE_DIR"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "ww" / hashlib.sha256(location.encode()).hexdigest()[:16]).resolve()


@dataclass(frozen=True, eq=False)
class StorageRoot:
    """Where a run keeps its artifacts; see the module docstring for what lives where."""

    location: str  # an absolute local path, or the URI as given (query included: workers rebuild from it)
    fs: pafs.FileSystem
    base: str  # the root inside ``fs``
    scheme: str | None  # None for a plain local path
    query: str = ""
    cache_dir: Path | None = None  # node-local cache when the root cannot be memory-mapped

    @classmethod
    def at(cls, root: str | os.PathLike) -> "StorageRoot":
        text = str(root)
        if "://" not in text:
            path = Path(text).expanduser().resolve()
            return cls(str(path), pafs.LocalFileSystem(), str(path), None)
        text = text.rstrip("/")
        scheme = text.split("://", 1)[0].lower()
        query = text.split("?", 1)[1] if "?" in text else ""
        problem = _cloud_credentials_missing(scheme, text)
        if problem:
            raise ValueError(f"storage root {text}: {problem}")
        try:
            fs, base = pafs.FileSystem.from_uri(text)
        except (ValueError, NotImplementedError, OSError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"storage root {text}: pyarrow cannot open it ({detail}); pass a local path or a URI such as "
                "s3://bucket/prefix, gs://bucket/prefix or file:///absolute/path"
            ) from exc
        return cls.on(fs, base, scheme=scheme, query=query, location=text)

    @classmethod
    def on(
        cls,
        fs: pafs.FileSystem,
        base: str,
        *,
        scheme: str = "memory",
        query: str = "",
        location: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> "StorageRoot":
        """A root on a ready-made pyarrow filesystem (how tests put it on an in-memory object store)."""
        location = location or f"{scheme}://{base.lstrip('/')}" + (f"?{query}" if query else "")
        local = fs.type_name == "local"
        cache = None if local else Path(cache_dir).resolve() if cache_dir else default_cache_dir(location)
        storage = cls(location, fs, base.rstrip("/") or "/", scheme, query, cache)
        if cache is not None:
            _MIRRORS[cache] = storage.root / "cache"
        return storage

    # --- where things are

    @property
    def is_uri(self) -> bool:
        return self.scheme is not None

    @property
    def on_local_disk(self) -> bool:
        """Whether the root is a directory of this machine (which other nodes may not see)."""
        return self.fs.type_name == "local"

    @property
    def root(self) -> Path | RootPath:
        if not self.is_uri:
            return Path(self.base)
        return RootPath(self.fs, self.base, self.base, self.location.split("?", 1)[0], self.query)

    @property
    def cache(self) -> Path:
        if self.cache_dir is not None:
            return CachePath(self.cache_dir)
        return Path(self.base) / "cache"

    @property
    def experts(self) -> Path | RootPath:
        return self.root / "experts"

    @property
    def results(self) -> Path | RootPath:
        return self.root / "results"

    @property
    def runs(self) -> Path | RootPath:
        return self.root / "runs"

    def uri(self, *parts: str) -> str:
        """The root (or a path under it) as text Ray's ``storage_path`` and :meth:`at` accept."""
        path = self.root
        for part in parts:
            path = path / part
        return str(path)

    def __str__(self) -> str:
        return self.location

    # --- checks

    def ensure(self) -> "StorageRoot":
        """Create the tree, failing early with a clear message when the root is not writable."""
        try:
            if self.cache_dir is not None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            if self.fs.type_name in _RENAMING:
                for path in (self.cache, self.experts, self.results, self.runs):
                    fs, fs_path = filesystem_path(path)
                    fs.create_dir(fs_path, recursive=True)
            probe = self.root / f".write-probe-{uuid.uuid4().hex}"
            with atomic_write(probe) as tmp:
                tmp.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            detail = (exc.strerror or str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__
            raise PermissionError(
                f"storage root {self.location} is not writable ({detail}); "
                "pass --root with a directory or bucket prefix you can write"
            ) from exc
        return self


@contextlib.contextmanager
def atomic_write(path: Path | RootPath) -> Iterator[Path]:
    """Yield a local temporary file; publish it at ``path`` only if the block completes.

    Local: a dot-named sibling renamed onto ``path`` (atomic on POSIX); pyarrow's dataset discovery
    ignores dot names, so a crash leaves debris no reader mistakes for a result. Object stores: the
    file is uploaded as one object after the block, so the object exists whole or not at all.
    """
    if isinstance(path, RootPath):
        with _atomic_write_remote(path) as tmp:
            yield tmp
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    remote = _mirror_of(Path(path)) if _MIRRORS else None
    if remote is not None:
        with _atomic_write_remote(remote) as tmp:
            shutil.copyfile(path, tmp)


@contextlib.contextmanager
def _atomic_write_remote(path: RootPath) -> Iterator[Path]:
    fs = path.fs
    if fs.type_name == "local":  # a file:// root: the temp file can sit beside its target
        fs.create_dir(str(PurePosixPath(path.path).parent), recursive=True)
        tmp = Path(path.path).with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
        try:
            yield tmp
            fs.move(str(tmp), path.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    with tempfile.TemporaryDirectory(prefix="ww-upload-") as folder:
        tmp = Path(folder) / path.name
        yield tmp
        if fs.type_name in _RENAMING:  # e.g. HDFS: upload beside the target, then rename
            fs.create_dir(str(PurePosixPath(path.path).parent), recursive=True)
            staging = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
            _upload(tmp, staging)
            fs.move(staging.path, path.path)
        else:
            _upload(tmp, path)


def _upload(source: Path, target: RootPath) -> None:
    """One output stream per object: S3/GCS make the object visible only when the stream closes."""
    with open(source, "rb") as data:
        stream = target.fs.open_output_stream(target.path)
        stream.upload(data)
        stream.close()


def write_text_atomic(path: Path | RootPath, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


# --- a local root on a multi-node cluster ----------------------------------------------------------

#: ``probe(marker, token, node_ids) -> {node_id: saw the token}``; the default runs one Ray task per node.
Probe = Callable[[str, str, list[str]], dict[str, bool]]

PROBE_TIMEOUT_S = 120.0


def nodes_without_root(storage: StorageRoot, node_ids: list[str], probe: Probe | None = None) -> list[str]:
    """The nodes that do not see this root: a random token written here must be readable there."""
    token = uuid.uuid4().hex
    marker = storage.root / f".node-probe-{token}"
    write_text_atomic(marker, token)
    try:
        seen = (probe or probe_nodes)(str(filesystem_path(marker)[1]), token, node_ids)
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()
    return [node for node in node_ids if not seen.get(node)]


def probe_nodes(marker: str, token: str, node_ids: list[str]) -> dict[str, bool]:
    """Read ``marker`` on each node with a zero-CPU task pinned there (hard node affinity)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def sees_marker(path: str, expected: str) -> bool:
        try:
            return Path(path).read_text() == expected
        except OSError:
            return False

    refs = {
        node: sees_marker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            marker, token
        )
        for node in node_ids
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    answered = set(ready)
    return {node: ref in answered and bool(ray.get(ref)) for node, ref in refs.items()}


def require_shared_root(storage: StorageRoot, node_ids: list[str] | None = None, probe: Probe | None = None) -> None:
    """Refuse, before any work, a root that some node of a multi-node cluster cannot see.

    A node-local root on a cluster fails late and confusingly (experts written on one machine,
    missing on the next); object-store roots are reachable from anywhere and are not probed.
    """
    if not storage.on_local_disk:
        return
    if node_ids is None:
        import ray

        node_ids = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if len(node_ids) < 2:
        return
    missing = nodes_without_root(storage, node_ids, probe)
    if missing:
        shown = ", ".join(node[:8] for node in missing)
        raise ValueError(
            f"storage root {storage.location} is not visible from {len(missing)} of {len(node_ids)} Ray nodes "
            f"({shown}): on a multi-node cluster use shared storage — an NFS/EFS path mounted at the same place "
            "on every node, or an object store (--root s3://bucket/prefix or gs://bucket/prefix)"
        )
