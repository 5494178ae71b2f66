"""cluster.yaml and its on-premises variant pass Ray's own cluster-config validation (no cloud needed)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_config_is_valid_for_ray_up(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert "pip install" in " ".join(config["setup_commands"])  # every node installs this project
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start  # the head runs no work


def test_aws_cluster_has_single_and_eight_gpu_workers_and_bounded_autoscaling():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    instance = {name: t["node_config"]["InstanceType"] for name, t in types.items()}
    assert instance["worker.gpu1"] == "g5.2xlarge" and instance["worker.gpu8"] == "g5.48xlarge"
    assert all(t.get("max_workers", 0) <= config["max_workers"] for t in types.values())
    import ray

    assert f"ray:{ray.__version__}" in config["docker"]["image"]  # same Ray as the project


def test_local_cluster_config_is_valid_and_stays_off_the_default_ports():
    """cluster-local.yaml (the launch test's) must not collide with another Ray on the same host."""
    import re

    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster-local.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": ["127.0.0.2"]}
    assert "docker" not in config
    head, worker = (" ".join(config[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
    assert "ray stop" not in worker  # on one host under one user it would stop the head too
    for command in (head, worker):
        ports = [int(p) for p in re.findall(r"-port=(\d+)", command)]
        assert ports and all(p >= 26000 for p in ports), command  # none of Ray's defaults (6379, 8265, ...)
