"""The console of ``run_bench.py run``: nothing of Ray's or Tune's own, progress, uncut tables."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from benchmark.console import RayOutput, StageProgress, ray_output_captured

REPO = Path(__file__).resolve().parents[2]

#: what Ray and Tune print on their own (the lines issue 19 found on a plain run)
FOREIGN = [
    r"worker processes have been started",
    r"\(raylet\)",
    r"pid=\d+",
    r"Configuration for experiment",
    r"TensorBoard",
    r"View detailed results",
    r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d.*\b(INFO|WARN|WARNING|ERROR)\b",
    r"^\[\d{4}-\d\d-\d\d",  # Ray's C++ core log lines
    r"^\[(INFO|WARN|WARNING|ERROR)\]",
]


def test_ray_output_goes_to_the_log_file_not_the_terminal(tmp_path, capsys):
    import ray._private.worker as ray_worker

    log = tmp_path / "root" / "logs" / "ray.log"
    original = ray_worker.print_to_stdstream
    with RayOutput(log):
        assert ray_output_captured()
        # what Ray's error listener does with a raylet warning, and what Ray's loggers do
        ray_worker.print_to_stdstream(
            {"lines": ["12 PYTHON worker processes have been started on node"], "pid": "raylet", "is_err": False},
            ignore_prefix=False,
        )
        logging.getLogger("ray.tune").warning("a Tune warning")
    assert not ray_output_captured() and ray_worker.print_to_stdstream is original
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
    text = log.read_text()
    assert "(raylet) 12 PYTHON worker processes have been started" in text and "a Tune warning" in text


def test_a_command_that_fails_before_ray_leaves_no_log(tmp_path):
    with RayOutput(tmp_path / "root" / "logs" / "ray.log"):
        pass
    assert not (tmp_path / "root").exists()


def test_stage_progress_piped_prints_a_line_per_quarter_with_an_eta():
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    with StageProgress(console, "trials", 8, "merged and evaluated") as bar:
        for i in range(8):
            bar.advance(f"{i} error(s)")
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"trials: {n}/8 merged and evaluated" for n in (2, 4, 6, 8)]
    assert "eta" in lines[0] and "error(s)" in lines[-1]
    assert not any("\x1b" in line or "━" in line for line in lines)  # plain text, no bar


def test_stage_progress_in_a_terminal_draws_a_bar():
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True)
    with StageProgress(console, "experts", 3, "fine-tuned") as bar:
        bar.log("  expert digits seed 0: test acc 0.910")
        bar.advance("digits 0.910")
    text = out.getvalue()
    assert "experts" in text and "1/3" in text and "digits 0.910" in text and "━" in text


@pytest.mark.slow
def test_piped_run_of_the_tiny_spec_shows_only_the_harness_and_an_uncut_leaderboard(tmp_path):
    from tests.conftest import tiny_spec_dict

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict()))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "RAY_ADDRESS", "WW_RAY_LOGS")}
    env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run(
        [sys.executable, "run_bench.py", "run", str(spec), "--root", str(tmp_path / "root")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    foreign = [line for line in lines if any(re.search(p, line) for p in FOREIGN)]
    assert not foreign, foreign
    assert not [line for line in proc.stderr.splitlines() if line.strip()], proc.stderr[-3000:]
    # the stages reported their progress as plain lines
    assert any(line.startswith("pre-training θ0: 40/40 steps") for line in lines), lines
    assert any(line.startswith("experts: 3/3 fine-tuned") for line in lines), lines
    assert any(line.startswith("trials: 6/6 merged and evaluated") for line in lines), lines
    assert not any("\x1b[" in line for line in lines)  # no cursor movement or colour codes in a pipe
    # the leaderboard whole: wider than 80 columns, no cell cut
    board = lines[next(i for i, line in enumerate(lines) if "Leaderboard" in line) :]
    assert max(len(line) for line in board) > 80
    assert "…" not in proc.stdout
    assert sum(bool(re.match(r"│ task_arithmetic +│", line)) for line in board) == 3
    assert lines[-1].startswith("Ray's own log:")
