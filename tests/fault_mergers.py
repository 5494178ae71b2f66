"""Mergers that misbehave on purpose, for the fault tests: a spec imports this module as a plugin.

Nothing in the harness knows these names: they exist only in processes that import this module,
which a spec does with ``plugins: [tests.fault_mergers]`` (the driver when it validates the spec,
every trial worker when it starts). That is the ordinary route for a researcher's own merger, so
the faults travel the same path a real one would, and no production code carries a test switch.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from ww import registry
from ww.registry import merger

#: Attempts of ``fault_flaky`` in this process (it fails the first one only).
_flaky_attempts = 0


@merger(name="fault_raise", citation="test double: always raises")
def fault_raise(tasks):
    raise RuntimeError("fault_raise: injected failure")


@merger(name="fault_flaky", citation="test double: fails once per process, then averages")
def fault_flaky(tasks):
    global _flaky_attempts
    _flaky_attempts += 1
    if _flaky_attempts == 1:
        raise ConnectionError("fault_flaky: transient failure on the first attempt")
    return tasks.map(lambda tau, block: tau.mean(dim=0))


@merger(name="fault_nan", citation="test double: returns NaN weights")
def fault_nan(tasks):
    return torch.full((tasks.num_params,), float("nan"))


@merger(name="fault_sleep", citation="test double: hangs far beyond any time limit")
def fault_sleep(tasks, *, seconds: float = 600.0):
    time.sleep(seconds)
    return torch.zeros(tasks.num_params)


@merger(name="fault_hog", citation="test double: allocates memory until it is stopped")
def fault_hog(tasks, *, gigabytes: float = 8.0, chunk_mb: int = 64):
    held = []
    for _ in range(int(gigabytes * 1024 / chunk_mb)):
        held.append(torch.ones(chunk_mb * 1024 * 1024 // 4))  # ones, not empty: the pages are touched
        time.sleep(0.01)
    return torch.zeros(tasks.num_params)


@merger(name="fault_exit", citation="test double: kills its worker process")
def fault_exit(tasks):
    os._exit(17)


def forget() -> None:
    """Unregister these mergers and this module from the test process (other tests list ww.MERGERS)."""
    for name in [n for n in registry.MERGERS if n.startswith("fault_")]:
        del registry._MERGERS[name]
    sys.modules.pop(__name__, None)
