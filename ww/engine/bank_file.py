"""Task-vector banks on disk, merged out-of-core from a memory map (issue 3, docs/DESIGN.md performance).

ViT-L-14's image encoder has 304 M parameters: 20 fp32 task vectors are 24 GB, as much as a
workstation's RAM. `save_bank` writes a bank as one ``[T, P]`` tensor in the safetensors format
(readable by any safetensors tool; the layout and task names travel in its metadata), one task
vector at a time, so it never needs the whole bank in memory. `open_bank` maps the file read-only
and returns an ordinary `TaskVectorBank` whose stream tells the kernel to drop each block's pages
once they are merged (``madvise(MADV_DONTNEED)``): resident memory stays bounded by the blocks in
flight, as mergekit's lazy per-tensor loader keeps it bounded for large language models, and the
results are bit-for-bit those of the same bank in memory (the same code reads both).

Other memory maps (``numpy.memmap``, ``torch.from_file``) work too through
`TaskVectorBank.from_flat`; the kernel then pages them in and out by itself, and their pages count
as resident until it needs the memory back.
"""

from __future__ import annotations

import ctypes
import json
import math
import mmap
import os
import struct
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from ..bank import TaskVectorBank, _check_matches, _layout_of, as_bank
from ..layout import Layout, layout_numel, normalize_layout

TENSOR_NAME = "task_vectors"
FORMAT = "ww-task-vector-bank/1"
_DTYPE_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}
_ALIGN = 4096
_RELEASE_SPAN = 1 << 22
"""Entries per task between two page releases (16 MiB of fp32 per task): fewer madvise calls."""


class BankWriter:
    """Write a ``[T, P]`` bank file task vector by task vector (or in any row-major pieces).

    >>> with BankWriter(path, layout, task_names=["cars", "dtd"]) as writer:
    ...     writer.add(tau_cars); writer.add(tau_dtd)

    The file appears only when every entry has been written (temporary file + rename), so a crash
    never leaves a truncated bank behind.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layout: Iterable[tuple[str, Iterable[int]]],
        task_names: Sequence[str],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if dtype not in _DTYPE_CODES:
            raise ValueError(f"bank files hold {sorted(map(str, _DTYPE_CODES))}, got {dtype}")
        self.path = Path(path)
        self.layout: Layout = normalize_layout(layout)
        self.task_names = tuple(str(name) for name in task_names)
        if not self.task_names:
            raise ValueError("a task-vector bank needs at least one task vector")
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"task names must be unique, got {self.task_names}")
        self.dtype = dtype
        self.num_params = layout_numel(self.layout)
        self._total = len(self.task_names) * self.num_params
        self._written = 0
        self._temporary = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._temporary, "wb")
        self._file.write(_header(self.layout, self.task_names, dtype))

    def write(self, values: torch.Tensor) -> None:
        """Append ``values`` (any shape, flattened row-major) to the bank's ``[T, P]`` data."""
        flat = values.detach().reshape(-1).to(device="cpu", dtype=self.dtype).contiguous()
        if self._written + flat.numel() > self._total:
            raise ValueError(f"bank {self.path} holds {self._total} entries; writing past the end")
        self._file.write(_tensor_bytes(flat))
        self._written += flat.numel()

    def add(self, task_vector: Mapping[str, torch.Tensor] | torch.Tensor) -> None:
        """Append one task vector: a state dict matching the layout, or a flat ``[P]`` tensor."""
        if self._written % self.num_params:
            raise ValueError("add() must start at a task-vector boundary; finish the partial one with write()")
        if isinstance(task_vector, torch.Tensor):
            if task_vector.shape != (self.num_params,):
                raise ValueError(f"expected a flat vector of {self.num_params} entries, got {tuple(task_vector.shape)}")
            self.write(task_vector)
            return
        row = self._written // self.num_params
        _check_matches(task_vector, self.layout, self.dtype, f"task vector {row}")
        for name, _ in self.layout:
            self.write(task_vector[name])

    def close(self) -> Path:
        """Finish the file; ValueError (and no file) if fewer than T·P entries were written."""
        if self._file.closed:
            return self.path
        self._file.close()
        if self._written != self._total:
            self._temporary.unlink(missing_ok=True)
            raise ValueError(f"bank {self.path}: wrote {self._written} of {self._total} entries")
        os.replace(self._temporary, self.path)
        return self.path

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> BankWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def save_bank(path: str | os.PathLike, task_vectors, task_names: Sequence[str] | None = None) -> Path:
    """Write task vectors (a bank, a list of state dicts, or a dict name -> state dict) to ``path``.

    State dicts are written one at a time, so a lazy sequence (one that loads each expert in
    ``__getitem__``) never holds more than one task vector in memory.
    """
    if isinstance(task_vectors, TaskVectorBank):
        bank = task_vectors
        names = task_names or bank.task_names
        with BankWriter(path, bank.layout, names, bank.data.dtype) as writer:
            for row in range(len(bank)):
                writer.write(bank.data[row])
        return Path(path)
    if isinstance(task_vectors, Mapping):
        if task_vectors and all(isinstance(v, torch.Tensor) for v in task_vectors.values()):
            return save_bank(path, as_bank(task_vectors))  # raises the single-state-dict hint
        names = task_names or tuple(str(name) for name in task_vectors)
        vectors: Sequence = list(task_vectors.values())
    else:
        vectors = task_vectors
        names = task_names or tuple(f"task_{index}" for index in range(len(vectors)))
    if not len(vectors):
        raise ValueError("a task-vector bank needs at least one task vector")
    first = vectors[0]
    layout, dtype = _layout_of(first, "task vector 0")
    with BankWriter(path, layout, names, dtype) as writer:
        writer.add(first)
        for index in range(1, len(vectors)):
            writer.add(vectors[index])
    return Path(path)


def open_bank(path: str | os.PathLike) -> TaskVectorBank:
    """Memory-map a bank written by `save_bank`/`BankWriter` (read-only, out-of-core).

    Nothing is read until a merger asks for a block; merged blocks are released from the process's
    resident memory right away. The file must not change while the bank is in use.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path} is not a task-vector bank file (too short)")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > 100_000_000:
            raise ValueError(f"{path} is not a task-vector bank file (header of {header_size} bytes)")
        header = json.loads(handle.read(header_size))
    metadata = header.get("__metadata__", {})
    entry = header.get(TENSOR_NAME)
    if metadata.get("format") != FORMAT or entry is None:
        raise ValueError(f"{path} is not a ww task-vector bank (no {TENSOR_NAME!r} tensor with {FORMAT} metadata)")
    dtype = _CODE_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"{path}: unsupported dtype {entry['dtype']}")
    num_tasks, num_params = (int(size) for size in entry["shape"])
    layout = normalize_layout(json.loads(metadata["layout"]))
    task_names = json.loads(metadata["task_names"])
    start, stop = (int(offset) for offset in entry["data_offsets"])
    itemsize = torch.empty((), dtype=dtype).element_size()
    data_start = 8 + header_size + start
    if stop - start != num_tasks * num_params * itemsize or layout_numel(layout) != num_params:
        raise ValueError(f"{path}: header sizes do not match ({num_tasks} x {num_params} {dtype})")
    if os.path.getsize(path) < data_start + stop - start:
        raise ValueError(f"{path} is truncated")
    descriptor = os.open(path, os.O_RDONLY)
    try:
        mapping = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(descriptor)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        flat = torch.frombuffer(mapping, dtype=dtype, count=num_tasks * num_params, offset=data_start)
    data = flat.view(num_tasks, num_params)
    bank = TaskVectorBank.from_flat(data, layout, task_names)
    object.__setattr__(bank, "_release", _PageRelease(mapping, data_start, num_tasks, num_params, itemsize))
    object.__setattr__(bank, "_mapping", mapping)
    return bank


class _PageRelease:
    """Drops the pages of merged column ranges from the process (they stay in the page cache).

    Ranges arrive in increasing order; they are released in spans of `_RELEASE_SPAN` entries per
    task to keep the number of system calls small. Dropping a page a later block still needs is
    harmless: touching it again faults it back in from the page cache or the file.
    """

    def __init__(self, mapping: mmap.mmap, data_start: int, num_tasks: int, num_params: int, itemsize: int):
        self.mapping = mapping
        self.data_start = data_start
        self.num_tasks = num_tasks
        self.num_params = num_params
        self.itemsize = itemsize
        self.pending: tuple[int, int] | None = None

    def __call__(self, start: int, stop: int) -> None:
        if self.pending is None or start < self.pending[0] or start > self.pending[1]:
            self.flush()
            self.pending = (start, stop)
        else:
            self.pending = (self.pending[0], max(stop, self.pending[1]))
        if self.pending[1] - self.pending[0] >= _RELEASE_SPAN or self.pending[1] == self.num_params:
            self.flush()

    def flush(self) -> None:
        if self.pending is None:
            return
        start, stop = self.pending
        self.pending = None
        page = mmap.PAGESIZE
        for row in range(self.num_tasks):
            first = self.data_start + (row * self.num_params + start) * self.itemsize
            last = self.data_start + (row * self.num_params + stop) * self.itemsize
            aligned = first - first % page
            if last > aligned:
                self.mapping.madvise(mmap.MADV_DONTNEED, aligned, last - aligned)


def _header(layout: Layout, task_names: Sequence[str], dtype: torch.dtype) -> bytes:
    num_params = layout_numel(layout)
    itemsize = torch.empty((), dtype=dtype).element_size()
    header = {
        TENSOR_NAME: {
            "dtype": _DTYPE_CODES[dtype],
            "shape": [len(task_names), num_params],
            "data_offsets": [0, len(task_names) * num_params * itemsize],
        },
        "__metadata__": {
            "format": FORMAT,
            "layout": json.dumps([[name, list(shape)] for name, shape in layout]),
            "task_names": json.dumps(list(task_names)),
        },
    }
    text = json.dumps(header).encode("utf-8")
    # Pad with spaces (allowed by the safetensors format) so the data starts on a page boundary.
    size = math.ceil((8 + len(text)) / _ALIGN) * _ALIGN - 8
    return struct.pack("<Q", size) + text + b" " * (size - len(text))


def _tensor_bytes(flat: torch.Tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor as a zero-copy buffer, without numpy.

    The buffer points into ``flat``'s memory: the caller keeps ``flat`` alive while using it.
    """
    size = flat.numel() * flat.element_size()
    if size == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * size).from_address(flat.data_ptr())).cast("B")
