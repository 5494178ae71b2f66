"""Time and memory limits of one trial, enforced inside the trial's own process.

Ray Tune has no per-trial wall-clock or memory cap that can stop a trial in the middle of its one
``step`` (stoppers and ``time_budget_s`` are looked at between reports, and Ray's memory monitor
kills whole workers only when the node runs out). So a watchdog thread samples the clock and the
process's private resident memory while the trial runs and, past a limit, sends SIGUSR2 to the main
thread, whose handler raises :class:`TrialLimitExceeded` there. A signal, unlike an exception
injected between bytecodes, also interrupts blocking waits (``time.sleep``, a future's result): the
trial stops within one poll interval plus the C operation that is running.

:class:`TrialLimitExceeded` derives from ``BaseException`` so that an ``except Exception`` inside a
merger cannot swallow it. The trial's temporaries are released as it unwinds; the worker drops its
warm assets (see ``benchmark.trials.grid``), so the next trial starts clean.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

#: Seconds between two looks of the watchdog at the clock and the memory.
POLL_SECONDS = 0.05


class TrialLimitExceeded(BaseException):
    """The trial ran past ``resources.trial_timeout_s`` or ``resources.trial_memory_gb``."""


class TrialFault(Exception):
    """A failure that would recur identically on a retry (the grid records it without retrying)."""


def private_memory_bytes() -> int | None:
    """Resident anonymous memory of this process (Linux ``RssAnon``), else None.

    Private memory is what the trial allocates: θ0, heads, merge temporaries. The bank in Ray's
    object store and the memory-mapped eval tensors are shared or file-backed and do not count,
    so the limit does not depend on how many trials share a node's bank.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def trial_limits(timeout_s: float | None, memory_gb: float | None) -> Iterator[None]:
    """Run the block under the limits; raise :class:`TrialLimitExceeded` in it when one is passed.

    Must be entered from the main thread (where Ray runs an actor's methods): only the main thread
    receives Python signal handlers. Without limits it does nothing at all.
    """
    if timeout_s is None and memory_gb is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise TrialFault("trial limits need the main thread (a Ray actor runs its methods there)")
    memory_limit = None if memory_gb is None else int(memory_gb * 2**30)
    if memory_limit is not None and private_memory_bytes() is None:
        raise TrialFault("resources.trial_memory_gb needs Linux (/proc/self/status RssAnon); remove it on this OS")

    reason: list[str] = []
    armed = [True]
    stop = threading.Event()
    main = threading.main_thread().ident
    start = time.monotonic()

    def on_signal(signum, frame) -> None:
        if armed[0] and reason:
            armed[0] = False
            raise TrialLimitExceeded(reason[0])

    def watch() -> None:
        peak = 0
        while not stop.wait(POLL_SECONDS):
            elapsed = time.monotonic() - start
            if timeout_s is not None and elapsed > timeout_s:
                reason.append(
                    f"trial exceeded resources.trial_timeout_s = {timeout_s:g} s (stopped after "
                    f"{elapsed:.1f} s); raise the limit or give trials more resources"
                )
            elif memory_limit is not None:
                used = private_memory_bytes() or 0
                peak = max(peak, used)
                if used > memory_limit:
                    reason.append(
                        f"trial exceeded resources.trial_memory_gb = {memory_gb:g} (private resident "
                        f"memory reached {used / 2**30:.2f} GB); raise the limit or use a larger node"
                    )
            if reason:
                signal.pthread_kill(main, signal.SIGUSR2)
                return

    previous = signal.signal(signal.SIGUSR2, on_signal)
    watchdog = threading.Thread(target=watch, name="ww-trial-limits", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        armed[0] = False  # from here on a late signal is ignored: the block is over
        stop.set()
        watchdog.join()
        signal.signal(signal.SIGUSR2, signal.SIG_DFL if previous is None else previous)
