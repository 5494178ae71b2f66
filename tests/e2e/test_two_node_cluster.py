"""The tiny spec on a simulated multi-node Ray cluster: trials on both workers, one bank copy each.

``ray.cluster_utils.Cluster`` starts real raylets on this machine, so it runs in its own process
(the test session already has a Ray of its own). The layout is the one ``cluster.yaml`` uses: a
head that runs no work (it hosts the driver, which ``ray.put``s the bank) and two 2-CPU workers,
each carrying a distinct custom resource so the report can name them. The root is a ``file://``
URI both workers see, so results, experts and Ray's own run state all go through ``pyarrow.fs``.

How "the bank was fetched once per node" is observed: the object manager of each raylet counts
the chunks it has received from other nodes ("num chunks received total" in the raylet's periodic
state dump). With the chunk size set to 64 KiB the 5 MB bank is ~80 chunks while everything else a
worker pulls (trial parameters, Train bookkeeping) is a handful, so a node that received the bank
once counts at least one bank's worth and well under two — even when it ran several trials.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHUNK = 64 << 10


def test_tiny_spec_on_two_worker_nodes_shares_the_root_and_fetches_the_bank_once_per_node(tmp_path):
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_TRAIN_V2_ENABLED": "1",
        "PYTHONUNBUFFERED": "1",
        "RAY_object_manager_default_chunk_size": str(CHUNK),
        "RAY_event_stats_print_interval_ms": "1000",
    }
    env.pop("RAY_ADDRESS", None)
    report = tmp_path / "report.json"
    log = tmp_path / "cluster.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, __file__, str(tmp_path / "root"), str(report)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    assert proc.returncode == 0, log.read_text()[-4000:]
    found = json.loads(report.read_text())

    # the shared-root probe ran on every node and passed; trials ran on both workers, none on the head
    trial_nodes = found["trial_nodes"]
    assert len(trial_nodes) == found["n_trials"] == 9
    assert set(trial_nodes.values()) == {"worker_a", "worker_b"}, trial_nodes

    # every row exactly once in the shared root
    assert found["rows_per_trial"] == {key: 3 for key in trial_nodes}
    assert found["duplicate_rows"] == 0 and found["statuses"] == ["ok"]

    # the bank crossed the network once per worker, however many trials that worker ran
    bank_chunks = -(-found["bank_bytes"] // CHUNK)
    for worker in ("worker_a", "worker_b"):
        received = found["chunks_received"][worker]
        assert bank_chunks <= received < 2 * bank_chunks, (worker, received, bank_chunks, trial_nodes)
    # (nine trials on two workers: at least one ran several, so this is not merely "once per trial")
    assert max(list(trial_nodes.values()).count(w) for w in ("worker_a", "worker_b")) >= 2
    assert found["chunks_received"]["head"] < bank_chunks  # the head holds the primary copy


# --- the cluster side, run as ``python tests/e2e/test_two_node_cluster.py ROOT REPORT`` ----------------------


def _chunks_received(logs: Path) -> dict[str, int]:
    """Node id → the last "num chunks received total" its raylet logged (one raylet*.out per node)."""
    counts = {}
    for raylet_log in logs.glob("raylet*.out"):
        node, last = None, None
        for line in raylet_log.read_text(errors="replace").splitlines():
            if m := re.search(r"\[state-dump\] Node ID: ([0-9a-f]+)", line):
                node = m.group(1)
            elif m := re.search(r"num chunks received total: (\d+)", line):
                last = int(m.group(1))
        if node is not None and last is not None:
            counts[node] = last
    return counts


def _run_cluster(root: Path, report: Path) -> None:
    import ray
    from ray._private import state
    from ray.cluster_utils import Cluster
    from rich.console import Console

    from benchmark.model.pretrained import load_base_model
    from benchmark.pipeline import run_spec
    from benchmark.results import store as results
    from benchmark.results.storage import StorageRoot
    from benchmark.spec.plan import build_plan
    from benchmark.spec.schema import ModelSpec, parse_spec
    from benchmark.trials.banks import build_bank
    from tests.conftest import tiny_spec_dict

    start = time.perf_counter()
    store = 150 << 20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "resources": {"head": 1},
            "object_store_memory": store,
            "include_dashboard": False,
        },
    )
    cluster.add_node(num_cpus=2, resources={"worker_a": 1}, object_store_memory=store)
    cluster.add_node(num_cpus=2, resources={"worker_b": 1}, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        names = {
            n["NodeID"]: next(r for r in ("head", "worker_a", "worker_b") if r in n["Resources"])
            for n in ray.nodes()
            if n["Alive"]
        }
        storage = StorageRoot.at(f"file://{root}")
        spec_dict = tiny_spec_dict()
        # a trial fills a worker node (2 CPUs): the two trials Tune runs at once are on different
        # nodes whatever the load, and reused actors then alternate between them
        spec_dict["resources"] = {**spec_dict["resources"], "trial_cpus": 2}
        # the first trials sleep (a test merger, loaded as a plugin): with only quick trials the
        # first node's reused actor could drain the queue before the second node's actor had
        # started (it flaked so on CI runs), so the spread would test Ray's start-up times
        spec_dict["plugins"] = ["tests.fault_mergers"]
        spec_dict["mergers"] = [{"name": "fault_sleep", "params": {"seconds": 8.0}}, *spec_dict["mergers"]]
        spec = parse_spec(spec_dict)
        summary = run_spec(spec, storage, console=Console(width=160))
        time.sleep(2.5)  # let each raylet log one more state dump after the grid
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())

        # which node ran each trial: Tune records the trial actor's pid; the GCS knows each actor's node
        pid_node = {
            a["Pid"]: a["Address"]["NodeID"] for a in state.actors().values() if "Trainable" in a["ActorClassName"]
        }
        trial_nodes = {}
        for result in (root / "runs" / "grid").rglob("result.json"):
            last = json.loads(result.read_text().splitlines()[-1])
            trial_nodes[last["config"]["trial"]["key"]] = names[pid_node[last["pid"]]]

        rows = [r for r in results.read_results(storage).to_pylist() if r["lambda_policy"] != "reference"]
        per_trial: dict[str, int] = {}
        for row in rows:
            per_trial[row["trial_key"]] = per_trial.get(row["trial_key"], 0) + 1
        plan = build_plan(spec)
        model = ModelSpec(**plan.trials[0].model)
        bank = build_bank([e for e in plan.experts], load_base_model(model, storage).visual_state(), storage)
        report.write_text(
            json.dumps(
                {
                    "n_trials": summary.trials_run,
                    "trial_nodes": trial_nodes,
                    "rows_per_trial": per_trial,
                    "duplicate_rows": len(rows) - len({(r["trial_key"], r["eval_task"]) for r in rows}),
                    "statuses": sorted({r["status"] for r in rows}),
                    "bank_bytes": bank.data.nbytes,
                    "chunks_received": {names[n]: c for n, c in _chunks_received(logs).items() if n in names},
                    "seconds": time.perf_counter() - start,
                },
                indent=1,
            )
        )
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _run_cluster(Path(sys.argv[1]), Path(sys.argv[2]))
