"""Fused block kernels: one ``torch.compile``-d loop instead of a dozen eager passes per block.

A merger's inner loop written in eager torch makes one pass over its ``[T, n]`` block per
operation: TIES's trim-elect-mean is about 14 of them, a DARE drop mask about 20 (integer hashing).
Inductor compiles the same function into a single vectorised C++ loop whose temporaries live in
registers, a few times fewer nanoseconds per entry (`run_bench.py perf merge --kernels
compiled|eager` measures both; docs/PERF.md has the figures). Every kernel has an eager twin that
computes the same numbers; tests check the two agree, so which one runs changes a result by
rounding at most (1-2 ulp where sums are reordered; masks, picks and selection counts are exact).

When the compiled kernels run (``WW_KERNELS``, or `use`):

- ``auto`` (default): only when compiling pays. A compile is paid once per process (dynamo traces
  every kernel variant) and, cold, once per machine (inductor builds C++ into its on-disk cache);
  what it buys is proportional to the entries merged. So ``auto`` compiles for streams of at least
  `AUTO_MIN_PARAMS` parameters per task, when a C++ compiler is on the PATH, and when either

  * the caller declared many merges in this process (`expect_many_merges`: a tuning worker, a
    sweep), so the compile is spread over all of them; or
  * one merge (`ww.merge`/`ww.weave`) is large, at least `ONE_SHOT_MIN_ENTRIES` entries over all
    tasks, and inductor's cache already holds its kernels: the same merge (merger, pooling, T)
    compiled before with the same cache directory and torch version, which ww records next to
    inductor's cache (`cache_marker`).

  Anything else runs eager: a script that merges a few checkpoints once never waits for a
  compiler, and is never slower than ``WW_KERNELS=eager``.
- ``compiled``: always (tests, warm-ups, a user who knows better). ``eager``: never.

A compile that fails (no compiler, an inductor bug) is reported once with a warning and the eager
twin takes over for the rest of the process, so a missing toolchain costs speed, never a result.
Kernels run inside ww's single-threaded block workers; dynamo guards on the thread count, so they
are compiled for one thread there (a first call elsewhere compiles a second variant).

This module is the switch and its records; the kernels themselves (`ww.engine.compiling.Kernel`)
consult it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import getpass
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import torch

MODES = ("auto", "compiled", "eager")
AUTO_MIN_PARAMS = 1 << 24
"""Smallest stream (parameters per task) that ``auto`` compiles for: 16.8 M, a fifth of ViT-B-32."""
ONE_SHOT_MIN_ENTRIES = 1 << 32
"""Smallest single merge (T x P entries) that ``auto`` compiles for without a declaration of many
merges, and then only with a warm inductor cache: loading and tracing the cached kernels of one
merge is a fixed cost that only a bank several times a ViT-B-32 bank of 8 tasks earns back
(docs/PERF.md, "One-shot merges")."""

_override: list[str] = []
_many: list[bool] = []
_jobs: list[Job] = []
_compiled_calls = [0]
_failures = [0]
_lock = threading.Lock()
_kernels: weakref.WeakSet = weakref.WeakSet()  # of ww.engine.compiling.Kernel (which imports this module)
_runs: collections.Counter[str] = collections.Counter()


def compiled_runs() -> dict[str, int]:
    """Per kernel name, how many calls a compiled form answered in this process (fallbacks to
    eager not counted; never decreases, kernels built on the fly included).

    The fallback to eager is silent for results by design, so this is how a caller (a test, a
    benchmark) tells that compiled code really ran."""
    return dict(_runs)


def failures() -> dict[str, BaseException]:
    """Per kernel name, the error of a compile that failed (those kernels run eager from then on)."""
    return {item.name: item.failure for item in list(_kernels) if item.failure is not None}


def mode() -> str:
    """The kernel mode in force: the innermost `use`, else ``WW_KERNELS``, else ``auto``."""
    value = _override[-1] if _override else os.environ.get("WW_KERNELS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"WW_KERNELS must be one of {MODES}, got {value!r}; unset it for 'auto'")
    return value


@contextlib.contextmanager
def use(value: str) -> Iterator[None]:
    """Force a kernel mode (``auto``/``compiled``/``eager``) inside the ``with`` block (not thread-local)."""
    if value not in MODES:
        raise ValueError(f"kernel mode must be one of {MODES}, got {value!r}")
    _override.append(value)
    try:
        yield
    finally:
        _override.pop()


@functools.lru_cache(maxsize=1)
def compiler_available() -> bool:
    """A C++ compiler inductor can use is on the PATH (``CXX`` if set, else c++/g++/clang++)."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return any(shutil.which(candidate) for candidate in candidates)


@contextlib.contextmanager
def expect_many_merges() -> Iterator[None]:
    """Declare that this process runs many merges (a Tune trial worker, a sweep over mergers):
    inside the block, ``auto`` compiles kernels for encoder-sized streams even when inductor's cache
    is cold, since the compile is paid once and every later merge runs faster. Nestable; like
    `use`, process-wide rather than thread-local."""
    with _lock:
        _many.append(True)
    try:
        yield
    finally:
        with _lock:
            _many.pop()


def many_merges_expected() -> bool:
    """Whether a caller is inside `expect_many_merges`."""
    return bool(_many)


class Job:
    """One public merge or weave (`job`): what ``auto`` weighs a compile against."""

    def __init__(self, label: str, entries: int) -> None:
        self.label = label
        self.entries = entries

    def cache_holds_kernels(self) -> bool:
        return cache_marker(self.label).exists()


@contextlib.contextmanager
def job(label: str, entries: int) -> Iterator[Job]:
    """Run one merge under ``auto``'s one-shot rule; ``label`` names what it compiles (merger,
    pooling, T), ``entries`` is T x P. On success, if kernels were compiled during it, marks the
    label's kernels as held by inductor's cache for later processes (`cache_marker`). Like `use`,
    process-wide: merges running in parallel threads see the innermost job."""
    current = Job(label, entries)
    calls_before, failures_before = _compiled_calls[0], _failures[0]
    _jobs.append(current)
    try:
        yield current
    finally:
        _jobs.remove(current)
    if _compiled_calls[0] > calls_before and _failures[0] == failures_before:
        _mark(cache_marker(label))


def inductor_cache_dir() -> Path:
    """The directory inductor keeps compiled kernels in (``TORCHINDUCTOR_CACHE_DIR``, else its default)."""
    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return Path(configured).absolute()
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return Path(default_cache_dir()).absolute()
    except (ImportError, AttributeError):  # private API: fall back to inductor's documented default
        return Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"


def cache_marker(label: str) -> Path:
    """The file whose presence says inductor's cache holds the kernels of merge ``label``.

    Inductor's own entries are keyed by traced graphs, which only tracing (the cost to avoid)
    reveals; ww instead records, in the cache directory, which merges it compiled there, per torch
    version. Deleting the cache directory deletes the records with it.
    """
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in label)
    return inductor_cache_dir() / "ww-kernels" / torch.__version__.replace("+", "_") / safe


def _mark(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:  # a read-only cache costs the next one-shot merge its speed-up, nothing else
        pass


def compiled_for(num_params: int) -> bool:
    """Whether kernels run compiled for a stream of ``num_params`` parameters per task (see the module doc)."""
    current = mode()
    if current != "auto":
        return current == "compiled"
    if num_params < AUTO_MIN_PARAMS or not compiler_available():
        return False
    if _many:
        return True
    running = _jobs[-1] if _jobs else None
    return running is not None and running.entries >= ONE_SHOT_MIN_ENTRIES and running.cache_holds_kernels()


def compiled_kernels() -> list[str]:
    """Names of the kernels compiled so far in this process (for reports and tests)."""
    return sorted({k.name for k in _kernels if k._compiled is not None and k.failure is None and k._ran})
