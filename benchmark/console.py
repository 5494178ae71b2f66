"""The console of ``run_bench.py run``: the harness's own lines and stage progress, nothing foreign.

Ray and Tune write to the driver's terminal on their own: the raylet's warnings (worker start-up
concurrency, memory pressure, also after the run is done) reach the driver through Ray's error
channel, and Ray's loggers print warnings to stderr. While :class:`RayOutput` is active all of it
goes to a log file under the storage root instead (``--debug`` keeps it on the terminal). Tune's own
reporter (experiment box, TensorBoard hint) is turned off where the grid starts (trials/grid.py).

:class:`StageProgress` shows a stage's progress as a rich progress bar in a terminal and as a few
plain lines (quarters of the work) when the output is piped or redirected, so logs stay readable.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: while a :class:`RayOutput` is active: the file Ray's own output goes to
_active_log: list = []


def ray_output_captured() -> bool:
    """Whether Ray's own logging is routed to a file (then ``ray.init`` must not configure it)."""
    return bool(_active_log)


class RayOutput(AbstractContextManager):
    """Route Ray's own driver-side output to ``path`` (appended) for the duration of a command."""

    def __init__(self, path: Path):
        self.path = path
        self._saved: dict = {}

    def __enter__(self) -> RayOutput:
        import ray._private.worker as ray_worker

        self._file = _LazyFile(self.path)
        self._saved["print_to_stdstream"] = ray_worker.print_to_stdstream
        ray_worker.print_to_stdstream = self._print_to_stdstream
        ray_logger = logging.getLogger("ray")
        self._saved["handlers"] = list(ray_logger.handlers)
        self._saved["propagate"] = ray_logger.propagate
        self._handler = logging.StreamHandler(self._file)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for handler in self._saved["handlers"]:
            ray_logger.removeHandler(handler)
        ray_logger.addHandler(self._handler)
        ray_logger.propagate = False
        _active_log.append(self)
        return self

    def _print_to_stdstream(self, data: dict, ignore_prefix: bool = False) -> None:
        source = data.get("actor_name") or data.get("task_name") or data.get("pid", "?")
        for line in data.get("lines", []):
            self._file.write(f"({source}{', ip=' + data['ip'] if data.get('ip') else ''}) {line}\n")

    def __exit__(self, *exc) -> None:
        import ray._private.worker as ray_worker

        _active_log.remove(self)
        ray_worker.print_to_stdstream = self._saved["print_to_stdstream"]
        ray_logger = logging.getLogger("ray")
        ray_logger.removeHandler(self._handler)
        for handler in self._saved["handlers"]:
            ray_logger.addHandler(handler)
        ray_logger.propagate = self._saved["propagate"]
        self._file.close()


class _LazyFile:
    """Opened (folders made) at the first line: a command that fails before Ray starts leaves no trace."""

    def __init__(self, path: Path):
        self.path, self._file = path, None

    def write(self, text: str) -> int:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class StageProgress:
    """One stage's progress: a rich bar in a terminal, a line per quarter of the work otherwise."""

    def __init__(self, console: Console, description: str, total: int, unit: str):
        self.console, self.description, self.total, self.unit = console, description, max(total, 0), unit
        self.done, self.note, self._start = 0, "", time.monotonic()
        self._printed_quarter = 0
        self._progress: Progress | None = None
        if console.is_terminal and not console.is_dumb_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(description, total=self.total or None, note="")

    def __enter__(self) -> StageProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, message: str) -> None:
        """A line above the bar (terminal) or on its own (piped)."""
        self.console.print(message, highlight=False)

    def update(self, done: int, note: str = "") -> None:
        self.done, self.note = min(done, self.total), note
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, note=note)
            return
        quarter = 4 * self.done // self.total if self.total else 4
        if quarter > self._printed_quarter:  # piped: a line at each quarter of the work, never a bar
            self._printed_quarter = quarter
            self.console.print(
                f"{self.description}: {self.done}/{self.total} {self.unit}{self._eta()}{' · ' + note if note else ''}",
                highlight=False,
            )

    def advance(self, note: str = "") -> None:
        self.update(self.done + 1, note)

    def _eta(self) -> str:
        if not self.done or self.done >= self.total:
            return f" ({time.monotonic() - self._start:.0f} s)"
        left = (time.monotonic() - self._start) / self.done * (self.total - self.done)
        return f" (eta {left / 60:.0f} min)" if left >= 90 else f" (eta {left:.0f} s)"
