"""Which cluster the harness joins and what it forwards, under `ray submit` and `ray job submit`."""

from __future__ import annotations

import json

import pytest

from benchmark.ray_env import FORWARDED_ENV, cluster_address, forwarded_env, runtime_env_for

DATA = {"WW_DATA_ROOT": "/mnt/ww/data", "HF_HOME": "/mnt/ww/hf", "WW_CACHE_DIR": "/mnt/ww/cache"}


@pytest.fixture
def ray_tmpdir(tmp_path, monkeypatch):
    """A Ray temp dir of our own: Ray's address file is looked up under ``$RAY_TMPDIR/ray``."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def test_ray_submit_joins_through_the_address_file_and_forwards_the_data_locations(ray_tmpdir):
    # `ray submit` runs the driver on the head with no RAY_ADDRESS; `ray start` wrote the address file
    (ray_tmpdir / "ray").mkdir()
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text("10.0.0.10:6379\n")
    address = cluster_address()
    assert address == "10.0.0.10:6379"
    assert runtime_env_for(address, {**DATA, "PATH": "/usr/bin"}) == {"env_vars": DATA}


def test_ray_job_submit_joins_through_ray_address(ray_tmpdir):
    environ = {"RAY_ADDRESS": "10.0.0.10:6379", "HF_HUB_OFFLINE": "1"}
    assert cluster_address(environ) == "10.0.0.10:6379"
    assert runtime_env_for(cluster_address(environ), environ) == {"env_vars": {"HF_HUB_OFFLINE": "1"}}


def test_no_cluster_starts_a_local_ray_whose_workers_inherit_the_environment(ray_tmpdir):
    assert cluster_address({}) is None
    assert runtime_env_for(None, DATA) is None  # nothing to forward: workers are this machine's children


def test_nothing_set_nothing_forwarded(ray_tmpdir):
    assert runtime_env_for("10.0.0.10:6379", {"PATH": "/usr/bin"}) is None


def test_variables_the_job_already_carries_are_left_to_the_job():
    # `ray job submit --runtime-env-json '{"env_vars": {"HF_HOME": ...}}'`: Ray refuses a driver
    # runtime_env repeating a key of the job's, so only the others are forwarded
    job = {"runtime_env": {"env_vars": {"HF_HOME": "/job/hf"}, "working_dir": "gcs://x.zip"}}
    environ = {**DATA, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job)}
    assert forwarded_env(environ) == {"WW_DATA_ROOT": "/mnt/ww/data", "WW_CACHE_DIR": "/mnt/ww/cache"}


def test_forwarded_runtime_env_is_accepted_by_ray_merged_with_a_jobs_own():
    """What Ray does with both: the job's runtime_env merged with the driver's, no conflict."""
    from ray.runtime_env.runtime_env import _merge_runtime_env

    job = {"env_vars": {"HF_HOME": "/job/hf"}}
    environ = {**DATA, "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": job})}
    merged = _merge_runtime_env(job, runtime_env_for("10.0.0.10:6379", environ))
    assert merged is not None  # None is Ray's "conflict"
    assert merged["env_vars"] == {**DATA, "HF_HOME": "/job/hf"}
    # …which is what happens without the filter:
    assert _merge_runtime_env(job, {"env_vars": {k: environ[k] for k in FORWARDED_ENV if k in environ}}) is None


def test_init_ray_passes_the_forwarded_env_when_joining(ray_tmpdir, monkeypatch):
    """pipeline.init_ray under `ray submit`: the address from the file, the runtime_env with it."""
    import ray

    from benchmark import pipeline

    (ray_tmpdir / "ray").mkdir()
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text("10.0.0.10:6379")
    for key, value in DATA.items():
        monkeypatch.setenv(key, value)
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    pipeline.init_ray()
    assert seen["address"] == "10.0.0.10:6379"
    assert seen["runtime_env"] == {"env_vars": DATA}
