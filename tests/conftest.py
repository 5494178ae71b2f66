"""Shared fixtures: one Ray session per test session, tiny specs that run in seconds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # logical CPUs and GPUs (none is real) are oversubscribed on purpose: scheduling is what
        # these tests exercise
        ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def tiny_spec_dict(tasks: list[str] | None = None, **overrides) -> dict:
    """A spec small enough for the test suite: a few toy tasks, very short pre-training and fine-tunes."""
    from benchmark.toy import TOY_TASKS

    spec = {
        "name": "tiny",
        "models": [
            {
                "name": "ww-toy-vit",
                "pretrained": "toy",
                "pretrain": {"steps": 40, "batch_size": 64, "n_pairs": 2000, "warmup": 5},
            }
        ],
        "setups": [
            {
                "name": "toy-mtl",
                "kind": "mtl",
                "tasks": tasks or list(TOY_TASKS)[:3],
                "data": {"n_train": 256, "n_test": 128, "seed": 0},
                "finetune": {"steps": 8, "batch_size": 32, "lr": 1e-4, "warmup": 2},
            }
        ],
        "mergers": ["task_arithmetic", {"name": "ties", "params": {"k": 0.2}}],
        "poolings": ["none", "avg", "randmix"],
        "variants": ["collaborative"],
        "seeds": [0],
        "resources": {"prepare_cpus": 1, "trial_cpus": 1},
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="session")
def finished_tiny_run(ray_session, tmp_path_factory):
    """The tiny spec run to completion once per test session (experts, banks, grid, Parquet)."""
    from rich.console import Console

    from benchmark.pipeline import run_spec
    from benchmark.results.storage import StorageRoot
    from benchmark.spec.schema import parse_spec

    storage = StorageRoot.at(tmp_path_factory.mktemp("finished-root"))
    spec = parse_spec(tiny_spec_dict())
    console = Console(record=True, width=200)
    summary = run_spec(spec, storage, console=console)
    return spec, storage, summary, console
