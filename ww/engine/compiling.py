"""Block kernels with an eager reference and a lazily ``torch.compile``-d twin.

`Kernel` is the machinery behind `ww.kernels`, which decides when the compiled form runs (the
``WW_KERNELS`` switch, `ww.kernels.expect_many_merges`, the one-shot rule) and keeps the records
(`ww.kernels.compiled_runs`, `ww.kernels.failures`). A kernel whose compile fails warns once and
answers with its eager form from then on.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch

from .. import kernels

RECOMPILE_LIMIT = 64
"""Compiled variants allowed per kernel (dynamo's default is 8). Blocks are views whose sizes,
offsets and strides fall into a few specialisations each (size 1, above or below inductor's
vectorisation threshold, offset 0, contiguous or not), kernels with an unrolled task loop get one
per T, and their combinations exceed 8."""


COMPILE_OPTIONS = {"cpp_wrapper": True}
"""Inductor's C++ wrapper releases the GIL while a kernel runs; its default Python wrapper keeps
it, which serialises ww's block workers: with it, two threads do twice the work in little more
than one thread's time."""


class Kernel:
    """A block function with an eager form and a lazily compiled one (see the module doc).

    ``eager`` is the reference; ``fused`` (default: ``eager`` itself) is the form written for the
    compiler: the same numbers, expressed so that inductor fuses it into one loop (``torch.where``
    masks, no in-place tricks that only pay off in eager mode). ``alone=False`` marks a kernel
    whose eager form is faster on its own (a plain ATen reduction): it then runs eager, and its
    fused form is only traced into loops that do more (`TaskStream.map_kernel` under a weave).
    """

    def __init__(
        self, eager: Callable, fused: Callable | None = None, name: str | None = None, alone: bool = True
    ) -> None:
        self.eager = eager
        self.fused = fused or eager
        self.name = name or getattr(eager, "__name__", "kernel")
        self.alone = alone
        self._compiled: Callable | None = None
        self._ran = False
        self.failure: BaseException | None = None
        self.compiled_runs = 0
        functools.update_wrapper(self, eager)
        kernels._kernels.add(self)

    def __call__(self, *args, **kwargs):
        return self.eager(*args, **kwargs)

    def for_params(self, num_params: int) -> Callable:
        """The form to run on a stream of ``num_params`` parameters: compiled or eager."""
        if self.alone and self.failure is None and kernels.compiled_for(num_params):
            return self.compiled
        return self.eager

    def compiled(self, *args, **kwargs):
        """The compiled form; on a failed compile, a warning and the eager form from then on."""
        if self.failure is not None:
            return self.eager(*args, **kwargs)
        if self._compiled is None:
            with kernels._lock:
                if self._compiled is None:
                    self._compiled = torch.compile(
                        self.fused,
                        dynamic=True,
                        fullgraph=True,
                        recompile_limit=RECOMPILE_LIMIT,
                        options=COMPILE_OPTIONS,
                    )
        # detached aliases (no copy): dynamo guards on the base of a view, and blocks are views of
        # banks of every shape, which made each call a recompile
        args = tuple(arg.detach() if isinstance(arg, torch.Tensor) else arg for arg in args)
        try:
            result = self._compiled(*args, **kwargs)
            self._ran = True
            kernels._compiled_calls[0] += 1  # unlocked: only ever compared with an earlier value
        except Exception as error:
            # the eager form answers; if it fails too, the input was bad, not the compile: its
            # error propagates and compiling stays on
            result = self.eager(*args, **kwargs)
            self._give_up(error)
            return result
        self.compiled_runs += 1  # a race between worker threads may lose a count, never make one
        kernels._runs[self.name] += 1
        return result

    def _give_up(self, error: BaseException) -> None:
        with kernels._lock:
            if self.failure is not None:
                return
            self.failure = error
            kernels._failures[0] += 1
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        warnings.warn(
            f"ww: compiling kernel {self.name!r} failed ({type(error).__name__}: {first_line}); using eager "
            "torch for it (slower, same results). Install a C++ compiler (e.g. g++), or set "
            "WW_KERNELS=eager to skip compiling.",
            RuntimeWarning,
            stacklevel=3,
        )


def kernel(
    fused: Callable | None = None, *, name: str | None = None, alone: bool = True
) -> Callable[[Callable], Kernel]:
    """Decorator: the decorated function is the eager reference, ``fused`` its compiler-friendly twin."""

    def wrap(eager: Callable) -> Kernel:
        return Kernel(eager, fused, name, alone)

    return wrap
