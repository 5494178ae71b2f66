"""``ray up cluster-local.yaml`` for real: a head and a worker on this machine, a run, a lost node.

What a user does with the launcher, end to end, through Ray's own CLI and ssh (set up by
tests/e2e/launch_local.py: sshd on 127.0.0.1/127.0.0.2, a dedicated user): ``ray up``, ``ray submit``
of a toy spec with ``--root`` on a path both nodes see; once its grid has started (Tune's experiment
folder exists) the worker node's raylet is killed. The run must end with every trial in the Parquet
dataset exactly once — on what is left, or after one re-submit — then ``ray down`` in a
``finally``. Needs root (it creates the user and starts sshd) and openssh-server + rsync.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.launch_local import CONFIG, REPO, LocalCluster

pytestmark = pytest.mark.slow


def _spec(name: str, mergers: list, **overrides) -> dict:
    from tests.conftest import tiny_spec_dict

    spec = tiny_spec_dict(name=name, mergers=mergers, **overrides)
    spec["resources"] = {**spec["resources"], "trial_cpus": 1}
    return spec


def _rows_per_trial(root: Path) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """(trial key → ok rows, trial key → rows, statuses) of the Parquet dataset, references excluded."""
    from benchmark.results import store as results
    from benchmark.results.storage import StorageRoot

    rows = [r for r in results.read_results(StorageRoot.at(root)).to_pylist() if r["lambda_policy"] != "reference"]
    ok, every = {}, {}
    for row in rows:
        every[row["trial_key"]] = every.get(row["trial_key"], 0) + 1
        if row["status"] == "ok":
            ok[row["trial_key"]] = ok.get(row["trial_key"], 0) + 1
    return ok, every, {r["status"] for r in rows}


def _expected(spec: dict) -> dict[str, int]:
    """trial key → rows it must write (one per evaluated task)."""
    from benchmark.spec.plan import build_plan
    from benchmark.spec.schema import SetupSpec, parse_spec

    plan = build_plan(parse_spec(spec))
    return {t.key: len(SetupSpec(**t.setup).evaluations()) for t in plan.trials}


def _busy_workers_on(cluster: LocalCluster, node_ip: str) -> list[str]:
    """Process titles of that node's Ray processes (agents, trial actors), ``ray::IDLE`` excluded: for the log."""
    raylet = cluster.raylet_pid(node_ip)
    busy = []
    for pid in cluster.user_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == raylet and title.startswith("ray::") and not title.startswith("ray::IDLE"):
            busy.append(title)
    return busy


@pytest.fixture(autouse=True)
def _forget_the_plugin_mergers():
    """The plan built here imports the spec's plugin (tests.fault_mergers) into this process: take
    its mergers out of the registry afterwards, as every other test that uses them does."""
    yield
    module = sys.modules.get("tests.fault_mergers")
    if module is not None:
        module.forget()


def _stage_project(cluster: LocalCluster) -> Path:
    """A copy of the project's sources owned by the launch user.

    ``file_mounts: {"~/ww": "."}`` makes ``ray up`` hash and sync everything under the folder it
    runs in; a clone holds more than sources (CI's virtual environment, root-only test caches such
    as ``.hypothesis``), which the user cannot read and nobody wants copied to every node."""
    project = cluster.user_dir("project")
    shutil.rmtree(project)
    project.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for folder in ("ww", "benchmark", "tests"):
        shutil.copytree(REPO / folder, project / folder, ignore=ignore)
    for name in ("run_bench.py", "pyproject.toml", "README.md", CONFIG.name):
        shutil.copy2(REPO / name, project / name)
    for path in [project, *project.rglob("*")]:
        os.chown(path, cluster.uid, cluster.gid, follow_symlinks=False)
    return project


def test_ray_up_submit_lose_the_worker_node_and_down(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("creates a user and starts sshd: run as root (CI does)")
    timings: dict[str, float] = {}
    log = tmp_path / "launch.log"
    with LocalCluster(tmp_path) as cluster:
        project = _stage_project(cluster)  # what `ray up` hashes and syncs: the sources, not a venv or caches
        ray = f"ray {{}} {project / CONFIG.name}"
        shared = cluster.user_dir("shared-root")  # one host: both nodes see the user's home
        root = shared / f"run-{time.time_ns()}"  # the user may outlive a test run
        spec_dir = cluster.user_dir("specs")
        # some trials sleep (a test merger, a plugin): the grid lasts long enough to lose a node in it
        spec = _spec(
            "launch",
            [
                "task_arithmetic",
                {"name": "ties", "params": {"k": 0.2}},
                {"name": "fault_sleep", "params": {"seconds": 6.0}},
            ],
            plugins=["tests.fault_mergers"],
        )
        spec_path = spec_dir / "launch.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        os.chown(spec_path, cluster.uid, cluster.gid)
        submit = f"{ray.format('submit')} run_bench.py run {spec_path} --root {root}"
        try:
            start = time.perf_counter()
            cluster.user_shell(f"{ray.format('up')} -y --no-config-cache", cwd=project, timeout=600)
            deadline = time.monotonic() + 180  # the autoscaler starts the worker after the head
            while cluster.raylet_pid("127.0.0.2") is None:
                assert time.monotonic() < deadline, "the worker node (127.0.0.2) never started"
                time.sleep(1)
            timings["up_s"] = time.perf_counter() - start

            # --- `ray submit`; the worker's raylet is killed once the grid has started ---
            clock = time.perf_counter()
            with log.open("w") as out:
                running = cluster.user_shell(submit, cwd=project, timeout=None, background=True, stdout=out)
                deadline = time.monotonic() + 1200
                grid = root / "runs" / "grid"  # Tune's experiment folder: the grid has started
                while not grid.exists():
                    assert running.poll() is None, log.read_text()[-5000:]
                    assert time.monotonic() < deadline, "the grid never started"
                    time.sleep(0.2)
                time.sleep(1.0)  # Tune places the first trials on both nodes
                busy = _busy_workers_on(cluster, "127.0.0.2")
                os.kill(cluster.raylet_pid("127.0.0.2"), 9)
                print("worker node lost while it ran:", busy)
                timings["worker_lost_after_s"] = time.perf_counter() - clock
                rc = running.wait(1200)
            timings["run_s"] = time.perf_counter() - clock
            ok, every, _ = _rows_per_trial(root)
            resubmits = 0
            if rc != 0 or ok != _expected(spec):
                resubmits = 1  # the documented recovery: the same command again resumes
                again = cluster.user_shell(submit, cwd=project, timeout=1200, check=False)
                assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
                timings["resubmit_s"] = time.perf_counter() - clock - timings["run_s"]
            ok, every, statuses = _rows_per_trial(root)
            assert ok == every == _expected(spec), (ok, every)  # 0 lost, 0 duplicated, no error row left
            assert statuses == {"ok"}
        finally:
            clock = time.perf_counter()
            down = cluster.user_shell(f"{ray.format('down')} -y", cwd=project, timeout=300, check=False)
            timings["down_s"] = time.perf_counter() - clock
        assert down.returncode == 0, down.stderr[-3000:]
    report = {**{k: round(v, 1) for k, v in timings.items()}, "run_rc": rc, "resubmits": resubmits}
    print("launch timings:", json.dumps(report))
