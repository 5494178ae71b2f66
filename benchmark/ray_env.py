"""Which Ray the harness joins, and what of the driver's environment its workers must see.

Two ways to run on a cluster, two ways of finding it:

- ``ray job submit`` sets ``RAY_ADDRESS`` for the driver (and needs ``ray[default]``, the
  ``cluster`` extra, on the client and the head);
- ``ray submit`` runs the driver over ssh on the head and sets nothing: ``ray.init()`` joins the
  cluster named in Ray's address file (``$RAY_TMPDIR/ray/ray_current_cluster``, written by
  ``ray start`` on that node).

Either way the workers are started by the raylets, not by the driver, so they do not inherit the
driver's environment: where data, weights and caches live is forwarded to them as the job's
``runtime_env``. Variables that a ``ray job submit --runtime-env-json`` already sets are left to
the job (Ray refuses a driver runtime_env that repeats them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

#: the driver's variables every worker needs: where data, weights and caches live
FORWARDED_ENV = ("WW_DATA_ROOT", "WW_CACHE_DIR", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")

#: set by Ray's job manager for a driver started by ``ray job submit`` (the job's config, JSON)
_JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def cluster_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The running cluster ``ray.init()`` would join (``RAY_ADDRESS``, else Ray's address file), or None."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_ADDRESS"):
        return environ["RAY_ADDRESS"]
    from ray._private.utils import read_ray_address

    return read_ray_address() or None


def _job_env_vars(environ: Mapping[str, str]) -> set[str]:
    raw = environ.get(_JOB_CONFIG_VAR)
    if not raw:
        return set()
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return set()
    return set((runtime_env.get("env_vars") or {}) if isinstance(runtime_env, dict) else ())


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The :data:`FORWARDED_ENV` variables set in ``environ`` that the job does not already carry."""
    environ = os.environ if environ is None else environ
    already = _job_env_vars(environ)
    return {k: environ[k] for k in FORWARDED_ENV if k in environ and k not in already}


def runtime_env_for(address: str | None, environ: Mapping[str, str] | None = None) -> dict | None:
    """The ``runtime_env`` for ``ray.init``: the forwarded variables when joining a cluster, else None.

    A Ray started by this process runs its workers on this machine, with this environment.
    """
    if address is None:
        return None
    env = forwarded_env(environ)
    return {"env_vars": env} if env else None
