"""Streaming over task vectors block by block: the engine every merger and pooling runs on.

Merging is memory-bound (docs/DESIGN.md, performance principles): the ``[T, P]`` bank is read in blocks
of a few hundred thousand entries that stay in cache while a merger works on them, temporaries are
bounded by the block size instead of growing with P, and the same code runs whether the bank sits in
memory or is memory-mapped from disk (out-of-core, `ww.open_bank`). Blocks are processed by a small
pool of worker threads, each running torch single-threaded: on 2 cores that beats intra-op
parallelism on cache-sized operands, whose per-operation synchronisation dominates.

A `TaskStream` is T task vectors read block by block in the compute dtype (`ww.precision`). Mergers
receive one and call `TaskStream.scan` for preliminary passes (e.g. TIES's global thresholds) and
`TaskStream.map` exactly once for the pass that writes M. Results never depend on the block size:
every operation a merger applies inside a block is element-wise, per column (a reduction over tasks),
per row of a tensor, or per whole tensor, and blocks are cut accordingly (`Block`, ``granularity``).
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from ..layout import Layout
from ..precision import compute_dtype

if TYPE_CHECKING:
    from .compiling import Kernel

DEFAULT_BLOCK_ENTRIES = 1 << 20
"""Entries of one ``[T, n]`` block across all tasks (4 MiB of fp32): small enough for the L3 cache
and for bounded temporaries, large enough that per-block overhead stays a few percent."""

GRANULARITIES = ("elements", "rows", "tensors")


@dataclass(frozen=True)
class Block:
    """A consecutive piece ``[start, stop)`` of the flat vector that lies inside one tensor.

    ``offset`` is the index of ``start`` inside tensor ``name`` (of shape ``shape``), so
    position-derived random streams (`ww.engine.counter_rng`) do not depend on how tensors are cut.
    """

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int
    offset: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def whole(self) -> bool:
        """True when the block is the whole tensor."""
        return self.offset == 0 and self.size == math.prod(self.shape)

    def positions(self, device: torch.device | str | None = None) -> torch.Tensor:
        """In-tensor indices of the block's entries (int64)."""
        return torch.arange(self.offset, self.offset + self.size, device=device)


@dataclass(frozen=True, eq=False)
class SampledBlock:
    """Entries of one tensor at scattered in-tensor positions: part of a random sample of a stream.

    Selection brackets its order statistics with a sample (`ww.engine.selection`); scattered positions
    make the sample's entries independent, where contiguous windows share a row's scale. It quacks
    like a `Block` where transforms look (``name``, ``shape``, ``size``, ``positions``), so a
    transform that derives randomness from positions (DARE) gives each sampled entry exactly the
    value a full pass gives it.
    """

    name: str
    shape: tuple[int, ...]
    tensor_start: int
    indices: torch.Tensor

    @property
    def size(self) -> int:
        return self.indices.numel()

    def positions(self, device: torch.device | str | None = None) -> torch.Tensor:
        """In-tensor indices of the sampled entries (int64)."""
        return self.indices.to(device) if device is not None else self.indices

    def flat_positions(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Indices of the sampled entries in the flat vector."""
        return self.positions(device) + self.tensor_start


def sample_blocks(layout: Layout, count: int, seed: int = 0) -> list[SampledBlock]:
    """About ``count`` positions drawn uniformly (with replacement) over the flat vector, by tensor.

    Each tensor gets its proportional share (stratified, rounded) so no ordering or grouping pass is
    needed; the draw depends only on the layout, ``count`` and ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    total = sum(math.prod(shape) for _, shape in layout)
    blocks = []
    start = 0
    for name, shape in layout:
        numel = math.prod(shape)
        share = round(count * numel / total) if total else 0
        if share:
            indices = torch.randint(0, numel, (share,), generator=generator)
            blocks.append(SampledBlock(name, tuple(shape), start, indices))
        start += numel
    return blocks


def scattered_blocks(layout: Layout, positions: torch.Tensor) -> list[SampledBlock]:
    """Sorted flat ``positions`` split by tensor into `SampledBlock`s (tensors without any are skipped)."""
    blocks = []
    start = 0
    for name, shape in layout:
        numel = math.prod(shape)
        lo, hi = (int(i) for i in torch.searchsorted(positions, torch.tensor([start, start + numel])))
        if hi > lo:
            blocks.append(SampledBlock(name, tuple(shape), start, positions[lo:hi] - start))
        start += numel
    return blocks


def iter_blocks(layout: Layout, granularity: str, max_entries: int) -> list[Block]:
    """Cut ``layout`` into blocks of at most ``max_entries`` entries per task where allowed.

    ``"elements"``: anywhere inside a tensor; ``"rows"``: only between rows of the last dimension
    (a row longer than ``max_entries`` is a block on its own); ``"tensors"``: whole tensors.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    max_entries = max(1, int(max_entries))
    blocks = []
    start = 0
    for name, shape in layout:
        numel = math.prod(shape)
        if granularity == "tensors" or numel <= max_entries:
            step = max(numel, 1)
        elif granularity == "rows":
            row = shape[-1] if shape and shape[-1] > 0 else 1
            step = max(1, max_entries // row) * row
        else:
            step = max_entries
        for offset in range(0, numel, step):
            size = min(step, numel - offset)
            blocks.append(Block(name, tuple(shape), start + offset, start + offset + size, offset))
        start += numel
    return blocks


class NonFiniteError(ValueError):
    """A task vector holds NaN or Inf."""


@dataclass
class _SharedState:
    """What derived streams share with the stream they come from."""

    validated: bool = False
    final_maps: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


Loader = Callable[[Block], torch.Tensor]
RowLoader = Callable[[Block, int], torch.Tensor]
Sampler = Callable[[SampledBlock], torch.Tensor]
Transform = Callable[[torch.Tensor, Block], torch.Tensor]
Finish = Callable[[Block, torch.Tensor], torch.Tensor]
Fuse = Callable[["Kernel", Mapping[str, object]], Callable[[torch.Tensor, Block], torch.Tensor] | None]


@dataclass(frozen=True, eq=False)
class TaskStream:
    """T task vectors, read as ``[T, n]`` blocks in the compute dtype.

    ``loader(block)`` returns the raw ``[T, n]`` block (possibly a view of read-only memory: never
    write into what `read` returns). ``transform`` rewrites blocks (DARE's drop-and-rescale);
    ``finish(block, m)`` post-processes what the final `map` writes (weaving fuses its pooling
    there) and ``fuse(kernel, params)`` may offer a block function doing a `map_kernel`'s kernel
    and the finish in one loop; ``release(start, stop)`` tells a memory-mapped bank that a column
    range is done.
    ``row_loader(block, t)`` returns task t's raw ``[n]`` piece of a block without touching the
    other tasks (a view where possible): what `map` with ``by_task=True`` reads, so a per-tensor
    merger never holds a block's T rows at once (streams without one stack the block and index it).
    ``in_memory`` says the rows are resident, so a merger may afford a ``[T, P]`` cache.
    ``sampler(sampled)`` returns the raw ``[T, m]`` entries at scattered positions; only streams
    whose rows are cheap to read at random (resident) have one, memory-mapped banks do not.
    """

    loader: Loader
    num_tasks: int
    layout: Layout
    dtype: torch.dtype
    labels: tuple[str, ...]
    block_entries: int = DEFAULT_BLOCK_ENTRIES
    workers: int | None = None
    release: Callable[[int, int], None] | None = None
    transform: Transform | None = None
    finish: Finish | None = None
    fuse: Fuse | None = None
    check_finite: bool = True
    in_memory: bool = False
    sampler: Sampler | None = None
    row_loader: RowLoader | None = None
    state: _SharedState = field(default_factory=_SharedState)

    @property
    def num_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.layout)

    def derive(
        self, *, transform: Transform | None = None, finish: Finish | None = None, fuse: Fuse | None = None
    ) -> TaskStream:
        """The same tasks with ``transform`` applied after the current one (sharing validation)."""
        combined = self.transform
        if transform is not None:
            inner = self.transform
            combined = transform if inner is None else (lambda chunk, block: transform(inner(chunk, block), block))
        return replace(
            self,
            transform=combined,
            finish=finish if finish is not None else self.finish,
            fuse=fuse if fuse is not None else self.fuse,
        )

    def without_finish(self) -> TaskStream:
        return replace(self, finish=None, fuse=None)

    def blocks(self, granularity: str = "elements", block_entries: int | None = None) -> list[Block]:
        per_task = max(1, (block_entries or self.block_entries) // max(1, self.num_tasks))
        return iter_blocks(self.layout, granularity, per_task)

    def read(self, block: Block) -> torch.Tensor:
        """The ``[T, n]`` block in the compute dtype; validated (NaN/Inf) on the first pass."""
        chunk = self.loader(block)
        if chunk.dtype != self.dtype:
            chunk = chunk.to(self.dtype)
        if self.check_finite and not self.state.validated:
            _check_finite(chunk, block, self.labels)
        if self.transform is not None:
            chunk = self.transform(chunk, block)
        return chunk

    def check_block(self, chunk: torch.Tensor, block: Block, total: float) -> None:
        """Raise `NonFiniteError` if ``chunk`` holds NaN/Inf, given a sum over it (or over |chunk|)
        that the caller computed: only a non-finite sum makes the entries be looked at."""
        if self.check_finite and not self.state.validated and not math.isfinite(total):
            _check_finite(chunk, block, self.labels)

    def read_raw(self, block: Block | SampledBlock) -> torch.Tensor:
        """The block in the compute dtype, untransformed and unchecked (for weaving's pooling)."""
        chunk = self.sampler(block) if isinstance(block, SampledBlock) else self.loader(block)
        return chunk if chunk.dtype == self.dtype else chunk.to(self.dtype)

    def read_sample(self, sampled: SampledBlock) -> torch.Tensor:
        """The ``[T, m]`` sampled entries in the compute dtype, transformed like `read` would."""
        if self.sampler is None:
            raise ValueError("this stream cannot be read at scattered positions (it has no sampler)")
        chunk = self.sampler(sampled)
        if chunk.dtype != self.dtype:
            chunk = chunk.to(self.dtype)
        if self.transform is not None:
            chunk = self.transform(chunk, sampled)
        return chunk

    def read_all(self) -> torch.Tensor:
        """All rows as one ``[T, P]`` tensor in the compute dtype (a view when possible)."""
        whole = Block("", (self.num_params,), 0, self.num_params, 0)
        return self.read_raw(whole)

    def scan(
        self,
        function: Callable[[torch.Tensor, Block], object],
        granularity: str = "elements",
        block_entries: int | None = None,
        reduce: Callable[[object], None] | None = None,
        validates: bool = False,
    ) -> list:
        """``function(tau, block)`` for every block, results in block order (a preliminary pass).

        ``block_entries`` overrides the block size, for passes whose per-block overhead is large;
        ``reduce(result)``, if given, consumes each result in the calling thread instead (see `_run`).
        ``validates=True`` (streams without a transform only) promises that ``function`` calls
        `check_block` with a sum it computed anyway, which saves the separate validation pass.
        """
        if validates and self.transform is not None:
            raise ValueError("validates=True needs a stream without a transform (it validates raw blocks)")
        read = self.read_raw if validates else self.read
        blocks = self.blocks(granularity, block_entries)
        results = _run(self, blocks, lambda block: function(read(block), block), reduce)
        self.state.validated = True
        return results

    def map_kernel(self, kernel: Kernel, /, **params: object) -> torch.Tensor:
        """`map` of the block kernel ``kernel(tau, **params)`` (compiled or eager: `Kernel.for_params`).

        For mergers whose block of M is a function of the same block of task vectors alone
        (averaging, task arithmetic, Consensus). Under a weave whose pooling has a fused form
        (``fuse``), the kernel and the pooling run as one compiled loop, so the pass reads each
        block once; the pooling's ``finish`` then does not run separately.
        """
        if self.fuse is not None and self.finish is not None:
            both = self.fuse(kernel, params)
            if both is not None:
                merged = self.without_finish().map(both)
                with self.state.lock:
                    self.state.final_maps += 1  # the finish ran, inside ``both``
                return merged
        run = kernel.for_params(self.num_params)
        return self.map(lambda tau, block: run(tau, **params))

    def map(
        self,
        function: Callable[[torch.Tensor, Block], torch.Tensor],
        granularity: str = "elements",
        out_dtype: torch.dtype | None = None,
        validates: bool = False,
        by_task: bool = False,
    ) -> torch.Tensor:
        """The flat ``[P]`` vector whose block ``b`` is ``function(tau_b, b)`` (after ``finish``).

        A merger calls this once, for the pass that produces M; with a ``finish`` hook the returned
        vector is the hook's output (weaving's pooled vector), which `weave` checks via the state.
        ``validates`` as in `scan`. ``by_task=True`` hands ``function`` a `TaskRows` (task t's
        ``[n]`` piece as ``tau[t]``, read when asked for) instead of the ``[T, n]`` block: for
        mergers that work on one task's tensor at a time (the spectral ones, on whole tensors), so
        a block in flight costs one task's tensor rather than T of them.
        """
        if validates and self.transform is not None:
            raise ValueError("validates=True needs a stream without a transform (it validates raw blocks)")
        if validates and by_task:
            raise ValueError("by_task=True validates every row itself; drop validates")
        out = torch.empty(self.num_params, dtype=out_dtype or self.dtype)
        if by_task:

            def read(block: Block) -> TaskRows:
                return TaskRows(self, block)

        else:
            read = self.read_raw if validates else self.read

        def work(block: Block) -> None:
            merged = function(read(block), block).reshape(-1)
            if self.finish is not None:
                merged = self.finish(block, merged)
            out[block.start : block.stop] = merged

        # the output's pages become resident as blocks are written: growth the heap guard expects
        _run(self, self.blocks(granularity), work, kept_bytes=out.element_size())
        self.state.validated = True
        if self.finish is not None:
            with self.state.lock:
                self.state.final_maps += 1
        return out


class TaskRows:
    """The T rows of one block, each read only when indexed (`TaskStream.map` with ``by_task``).

    Quacks like the ``[T, n]`` block where per-task code looks: ``len(rows)``, ``rows[t]`` (task
    t's ``[n]`` entries in the compute dtype, a view of the inputs where the stream allows),
    ``dtype`` and ``mean()``. Every row is validated (NaN/Inf) when the block is opened, as `read`
    validates a block, so a merger that reads only some rows still rejects bad inputs. A stream
    with a transform, or without a ``row_loader``, reads the whole block once and hands out its rows.
    """

    def __init__(self, stream: TaskStream, block: Block) -> None:
        self.stream = stream
        self.block = block
        self.dtype = stream.dtype
        self._stacked = None
        if stream.row_loader is None or stream.transform is not None:
            self._stacked = stream.read(block)
        elif stream.check_finite and not stream.state.validated:
            for task in range(stream.num_tasks):
                _check_finite(self[task].unsqueeze(0), block, (stream.labels[task],))

    def __len__(self) -> int:
        return self.stream.num_tasks

    def __getitem__(self, task: int) -> torch.Tensor:
        if not 0 <= task < len(self):
            raise IndexError(f"task {task} out of range for {len(self)} tasks")
        if self._stacked is not None:
            return self._stacked[task]
        row = self.stream.row_loader(self.block, task)
        return row if row.dtype == self.dtype else row.to(self.dtype)

    def mean(self, columns: int = 1 << 16) -> torch.Tensor:
        """The mean over tasks, equal to ``stacked.mean(dim=0)``: computed on slices of ``columns``
        entries across the T rows (a column's mean does not depend on the others), so it never
        stacks the block."""
        if self._stacked is not None:
            return self._stacked.mean(dim=0)
        size = self.block.size
        out = torch.empty(size, dtype=self.dtype)
        rows = [self.stream.row_loader(self.block, task) for task in range(len(self))]
        for lo in range(0, size, columns):
            hi = min(size, lo + columns)
            torch.mean(torch.stack([row[lo:hi] for row in rows]).to(self.dtype), dim=0, out=out[lo:hi])
        return out


def _check_finite(chunk: torch.Tensor, block: Block, labels: Sequence[str]) -> None:
    # A NaN or Inf anywhere makes the block's sum non-finite: one reduction instead of a full
    # isfinite pass; only a failing block (or a sum overflowing to Inf) is looked at closely.
    if chunk.numel() == 0 or math.isfinite(float(chunk.sum())):
        return
    bad = ~torch.isfinite(chunk)
    if not bool(bad.any()):
        return
    row, column = (int(i) for i in bad.nonzero()[0])
    raise NonFiniteError(
        f"task vector {labels[row]!r} has a non-finite value ({float(chunk[row, column])}) in tensor "
        f"{block.name!r} at flat index {block.offset + column}; clean the task vectors first"
    )


TRIM_EVERY = 256
"""Blocks between two requests to the allocator to return freed memory where resident memory cannot
be read (no ``/proc``); elsewhere `_HeapGuard` decides when (see `_return_free_memory`)."""
TRIM_SLACK_BYTES = 64 << 20
"""Resident growth within one pass, beyond what the pass keeps on purpose, after which freed heap
memory is given back to the system (`_HeapGuard`)."""
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _single_threaded() -> None:
    # torch initialises a thread's OpenMP setting lazily, from the process-wide value, on its first
    # parallel operation; trigger that first (get_num_threads does), then pin this thread to 1.
    torch.get_num_threads()
    torch.set_num_threads(1)


def _tune_allocator() -> None:
    """Keep block temporaries in glibc's heaps instead of fresh mappings (once per process).

    By default glibc serves allocations above a (dynamic) threshold with their own ``mmap`` and
    gives heap memory back as soon as 2× that threshold is free at the top: a block's
    multi-megabyte temporaries are then faulted in page by page on every block, which makes
    element-wise operations several times slower than on warm memory. Fixed thresholds (32 MiB, 256 MiB)
    stop that; `_return_free_memory` still trims every `TRIM_EVERY` blocks and after each pass, so
    resident memory stays bounded. Process-wide; ``WW_TUNE_MALLOC=0`` leaves glibc's defaults.
    """
    if _TUNED or os.environ.get("WW_TUNE_MALLOC", "1") == "0":
        return
    _TUNED.append(True)
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD


_TUNED: list = []


def _pool(workers: int) -> ThreadPoolExecutor:
    """A persistent pool of single-threaded workers (one per size).

    Persistent on purpose: every new thread gets its own malloc arena, and freed block temporaries
    left in many arenas would make resident memory grow with the number of passes.
    """
    with _POOLS_LOCK:
        _tune_allocator()
        pool = _POOLS.get(workers)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=workers, initializer=_single_threaded, thread_name_prefix="ww")
            _POOLS[workers] = pool
        return pool


def _run(
    stream: TaskStream,
    blocks: list[Block],
    work: Callable[[Block], object],
    reduce: Callable[[object], None] | None = None,
    kept_bytes: int = 0,
) -> list:
    """``work(block)`` for every block, in order of blocks for results and releases.

    With ``reduce``, each result is handed to it in the calling thread as soon as it is ready and
    nothing is kept: what the caller retains is then allocated by the calling thread, not in the
    workers' arenas between their temporaries (which fragments them). ``kept_bytes`` per entry of
    a finished block is memory the pass keeps on purpose (`TaskStream.map`'s output), which the
    heap guard does not count as growth.
    """
    workers = stream.workers if stream.workers is not None else default_workers()
    release = stream.release
    results = []
    _return_free_memory()  # what the caller freed since the last pass, so the guard starts from live memory
    guard = _HeapGuard()

    def deliver(result, block: Block) -> None:
        if reduce is None:
            results.append(result)
        else:
            reduce(result)
        guard.finished(block.size * kept_bytes)

    # Blocks always run in single-threaded workers, even with one worker: BLAS and LAPACK round
    # differently with different thread counts, and results must not depend on the settings.
    try:
        previous = torch.get_num_threads()
        try:
            pool = _pool(workers)
            pending: deque = deque()
            for block in blocks:
                if len(pending) >= 2 * workers:
                    deliver(*_finish_one(pending, release))
                pending.append((block, pool.submit(work, block)))
            while pending:
                deliver(*_finish_one(pending, release))
        finally:
            # a worker's initializer sets torch's global thread count to 1 as well: restore it so
            # threads the caller creates later keep its setting
            torch.set_num_threads(previous)
        return results
    finally:
        _return_free_memory()


def in_workers(functions: Sequence[Callable[[], object]], workers: int | None = None) -> list:
    """Call every function on ww's single-threaded worker pool; results in order.

    For a few independent single-threaded pieces of work outside a block pass (e.g. one
    ``kthvalue`` per task), which would otherwise run one after another on one core.
    """
    if threading.current_thread().name.startswith("ww"):  # already a worker: waiting on the pool could deadlock
        return [function() for function in functions]
    pool = _pool(workers if workers is not None else default_workers())
    previous = torch.get_num_threads()
    try:
        return [future.result() for future in [pool.submit(function) for function in functions]]
    finally:
        torch.set_num_threads(previous)  # see `_run`: a worker's initializer lowers the global count


def _finish_one(pending: deque, release) -> tuple[object, Block]:
    block, future = pending.popleft()
    try:
        result = future.result()
    except BaseException:
        for _, other in pending:
            other.cancel()
        for _, other in pending:
            try:
                other.result()
            except BaseException:
                pass
        raise
    if release is not None:
        release(block.start, block.stop)
    return result, block


class _HeapGuard:
    """Gives freed heap memory back whenever a pass's resident memory grew by `TRIM_SLACK_BYTES`
    beyond what it keeps on purpose.

    Why it is needed: torch allocates with ``posix_memalign``, and glibc (before 2.38) serves an
    aligned request only from a free chunk somewhat larger than the request. When a worker's small
    results (counts, collected values) land in the remainders around its freed block temporaries,
    the holes left are just too small for the next block's temporaries of the same size, so each
    block takes fresh memory at the top of the heap: a scan that keeps small per-block results grows
    by several blocks' worth of memory per block until the next trim. Checking resident
    memory after every block (one read of ``/proc/self/statm``) bounds that growth, and trims only
    when there is growth to take back, where trimming after a fixed number of blocks cost every
    pass its re-faulted pages. Without ``/proc`` it trims every `TRIM_EVERY` blocks.
    """

    def __init__(self) -> None:
        self.blocks = 0
        self.kept = 0
        try:
            self.fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self.fd = None
        self.baseline = self._resident()

    def _resident(self) -> int:
        if self.fd is None:
            return 0
        try:
            return int(os.pread(self.fd, 64, 0).split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            os.close(self.fd)
            self.fd = None
            return 0

    def finished(self, kept: int = 0) -> None:
        """A block was delivered; ``kept`` bytes of it stay resident on purpose."""
        self.blocks += 1
        self.kept += kept
        if self.fd is None:
            if self.blocks % TRIM_EVERY == 0:
                _return_free_memory()
            return
        if self._resident() - self.baseline - self.kept > TRIM_SLACK_BYTES:
            _return_free_memory()
            # what is left is live (blocks in flight, kept results): count it as the new floor
            # only if the trim could not take back at least half the slack, so live memory that
            # grows legitimately does not trigger a trim after every block
            left = self._resident() - self.baseline - self.kept
            if left > TRIM_SLACK_BYTES // 2:
                self.baseline += left

    def __del__(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _return_free_memory() -> None:
    """Ask glibc to give freed heap memory back to the system (no-op elsewhere).

    Block temporaries are freed, but glibc's per-thread arenas fragment under torch's 64-byte
    aligned multi-megabyte allocations and keep growing: a pass could end with gigabytes resident
    that nothing uses. Trimming every `TRIM_EVERY` blocks and after each pass keeps resident memory
    at the working set, for the price of re-faulting some pages (a few percent of the time).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_TRIM: list = []


def _malloc_trim():
    if not _TRIM:
        try:
            import ctypes

            _TRIM.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _TRIM.append(None)
    return _TRIM[0]


def default_workers() -> int:
    """Worker threads for block processing: torch's intra-op thread count (``WW_WORKERS`` overrides)."""
    value = os.environ.get("WW_WORKERS")
    if value:
        return max(1, int(value))
    return max(1, torch.get_num_threads())


def bank_stream(
    data: torch.Tensor,
    layout: Layout,
    labels: Sequence[str],
    *,
    release: Callable[[int, int], None] | None = None,
    block_entries: int | None = None,
    workers: int | None = None,
) -> TaskStream:
    """A stream over the rows of a ``[T, P]`` tensor (in memory or memory-mapped)."""

    def load(block: Block) -> torch.Tensor:
        return data[:, block.start : block.stop]

    def load_row(block: Block, task: int) -> torch.Tensor:
        return data[task, block.start : block.stop]

    def sample(sampled: SampledBlock) -> torch.Tensor:
        return data.index_select(1, sampled.flat_positions(data.device))

    return TaskStream(
        loader=load,
        num_tasks=data.shape[0],
        layout=layout,
        dtype=compute_dtype(data.dtype),
        labels=tuple(labels),
        block_entries=block_entries or DEFAULT_BLOCK_ENTRIES,
        workers=workers,
        release=release,
        in_memory=release is None,
        sampler=sample if release is None else None,
        row_loader=load_row,
    )
