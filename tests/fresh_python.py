"""Run a snippet in a fresh interpreter (nothing this test process imported or warmed up), with the
repository importable, and read back the JSON it prints last: how the tests measure what a user's
new process meets (imports loaded, one-shot compile decisions, peak memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str, *args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> object:
    """``python -c code args...`` from the repository root; ``env`` adds variables, ``drop`` removes some."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    for name in drop:
        environ.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
