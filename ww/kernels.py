"""Fused block kernels: one ``torch.compile``-d loop instead of a dozen eager passes per block.

A merger's inner loop written in eager torch makes one pass over its ``[T, n]`` block per
operation: TIES's trim-elect-mean is about 14 of them, a DARE drop mask about 20 (integer hashing).
Inductor compiles the same function into a single vectorised C++ loop whose temporaries live in
registers; on this project's 2-core reference machine that is 2-4x fewer nanoseconds per entry
(`run_bench.py perf merge --kernels compiled|eager` measures both). Every kernel has an eager twin
that computes the same numbers; tests check the two agree, so which one runs changes a result by
rounding at most (1-2 ulp where sums are reordered; masks, picks and selection counts are exact).

When the compiled kernels run (``WW_KERNELS``, or `use`):

- ``auto`` (default): for streams of at least `AUTO_MIN_PARAMS` parameters (real encoders: a
  ViT-B-32 image encoder has 88 M) when a C++ compiler is on the PATH. Smaller banks stay eager,
  since a first compile costs seconds (10-30 s per kernel cold, 2-3 s once inductor's on-disk
  cache, shared by processes and Ray workers on a machine, holds it).
- ``compiled``: always (tests, warm-ups). ``eager``: never.

A compile that fails (no compiler, an inductor bug) is reported once with a warning and the eager
twin takes over for the rest of the process, so a missing toolchain costs speed, never a result.
Kernels run inside ww's single-threaded block workers; dynamo guards on the thread count, so they
are compiled for one thread there (a first call elsewhere compiles a second variant).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import shutil
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator

import torch

MODES = ("auto", "compiled", "eager")
AUTO_MIN_PARAMS = 1 << 24
"""Smallest stream (parameters per task) that ``auto`` compiles for: 16.8 M, a fifth of ViT-B-32."""

_override: list[str] = []
_lock = threading.Lock()
_kernels: "weakref.WeakSet[Kernel]" = weakref.WeakSet()
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


def compiled_for(num_params: int) -> bool:
    """Whether kernels run compiled for a stream of ``num_params`` parameters per task."""
    current = mode()
    if current == "auto":
        return num_params >= AUTO_MIN_PARAMS and compiler_available()
    return current == "compiled"


RECOMPILE_LIMIT = 64
"""Compiled variants allowed per kernel (dynamo's default is 8). Blocks are views whose sizes,
offsets and strides fall into a few specialisations each (size 1, above or below inductor's
vectorisation threshold, offset 0, contiguous or not), kernels with an unrolled task loop get one
per T, and their combinations exceed 8."""


COMPILE_OPTIONS = {"cpp_wrapper": True}
"""Inductor's C++ wrapper releases the GIL while a kernel runs; its default Python wrapper keeps
it, which serialised ww's two block workers (measured: two threads took 2.3x one thread's time
for twice the work, against 1.03x with the C++ wrapper)."""


class Kernel:
    """A block function with an eager form and a lazily compiled one (see the module doc).

    ``eager`` is the reference; ``fused`` (default: ``eager`` itself) is the form written for the
    compiler: the same numbers, expressed so that inductor fuses it into one loop (``torch.where``
    masks, no in-place tricks that only pay off in eager mode). ``alone=False`` marks a kernel
    whose eager form is faster on its own (a plain ATen reduction): it then runs eager, and its
    fused form is only traced into loops that do more (`TaskStream.map_kernel` under a weave).
    """

    def __init__(self, eager: Callable, fused: Callable | None = None, name: str | None = None, alone: bool = True) -> None:
        self.eager = eager
        self.fused = fused or eager
        self.name = name or getattr(eager, "__name__", "kernel")
        self.alone = alone
        self._compiled: Callable | None = None
        self.failure: BaseException | None = None
        self.compiled_runs = 0
        functools.update_wrapper(self, eager)
        _kernels.add(self)

    def __call__(self, *args, **kwargs):
        return self.eager(*args, **kwargs)

    def for_params(self, num_params: int) -> Callable:
        """The form to run on a stream of ``num_params`` parameters: compiled or eager."""
        if self.alone and self.failure is None and compiled_for(num_params):
            return self.compiled
        return self.eager

    def compiled(self, *args, **kwargs):
        """The compiled form; on a failed compile, a warning and the eager form from then on."""
        if self.failure is not None:
            return self.eager(*args, **kwargs)
        if self._compiled is None:
            with _lock:
                if self._compiled is None:
                    self._compiled = torch.compile(
                        self.fused, dynamic=True, fullgraph=True, recompile_limit=RECOMPILE_LIMIT,
                        options=COMPILE_OPTIONS)
        # detached aliases (no copy): dynamo guards on the base of a view, and blocks are views of
        # banks of every shape, which made each call a recompile
        args = tuple(arg.detach() if isinstance(arg, torch.Tensor) else arg for arg in args)
        try:
            result = self._compiled(*args, **kwargs)
        except Exception as error:
            # the eager form answers; if it fails too, the input was bad, not the compile: its
            # error propagates and compiling stays on
            result = self.eager(*args, **kwargs)
            self._give_up(error)
            return result
        self.compiled_runs += 1  # a race between worker threads may lose a count, never make one
        _runs[self.name] += 1
        return result

    def _give_up(self, error: BaseException) -> None:
        with _lock:
            if self.failure is not None:
                return
            self.failure = error
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        warnings.warn(
            f"ww: compiling kernel {self.name!r} failed ({type(error).__name__}: {first_line}); using eager "
            "torch for it (slower, same results). Install a C++ compiler (e.g. g++), or set "
            "WW_KERNELS=eager to skip compiling.",
            RuntimeWarning,
            stacklevel=3,
        )


def kernel(fused: Callable | None = None, *, name: str | None = None, alone: bool = True) -> Callable[[Callable], Kernel]:
    """Decorator: the decorated function is the eager reference, ``fused`` its compiler-friendly twin."""

    def wrap(eager: Callable) -> Kernel:
        return Kernel(eager, fused, name, alone)

    return wrap
