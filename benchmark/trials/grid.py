"""The grid on Ray Tune: one trial per (model × setup × merger × pooling × variant × seed).

Each Tune trial is a :class:`MergeTrial` actor; with ``reuse_actors=True`` the actor survives from
trial to trial and keeps θ0, heads and eval tensors warm (:class:`WarmAssets`). Banks arrive by
reference through ``tune.with_parameters``: on the object-store route the numpy buffer sits once in
the node's object store and every trial maps it zero-copy; on the file route the reference names a
content-addressed file in the node's cache that every trial maps read-only (the node builds it once
if it lacks it). A trial writes its own Parquet part before it reports, so a
crash between the two only re-runs that trial.
"""

from __future__ import annotations

import os
import time
import traceback

import ray
from ray import tune

import ww
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import Trial
from benchmark.spec.schema import ModelSpec, ResourcesSpec, SetupSpec, import_plugins
from benchmark.trials.banks import BankFile, SharedBank, open_for_trial
from benchmark.trials.limits import TrialFault, TrialLimitExceeded, trial_limits
from benchmark.trials.merge_eval import WarmAssets, error_rows, run_trial

#: A trial that raises is tried again this many times (fresh assets) before its error row is written.
#: Faults that would recur identically (a limit exceeded, non-finite results) are not retried.
TRIAL_RETRIES = 1
#: A trial whose worker process dies is restarted on a new worker this many times by Tune.
MAX_WORKER_FAILURES = 1


class MergeTrial(tune.Trainable):
    """A merge-and-evaluate trial; one ``step`` does the whole trial and writes its rows."""

    def setup(
        self,
        config: dict,
        banks: dict,
        references: dict,
        root: str,
        limits: dict | None = None,
        plugins: tuple[str, ...] = (),
    ) -> None:
        import_plugins(list(plugins))  # the spec's own mergers must exist in this worker too
        self._ww_limits = limits or {}
        self._ww_banks = banks  # bank key → ObjectRef of a SharedBank or BankFile (resolved lazily, once per actor)
        self._ww_references = references
        self._ww_root = StorageRoot.at(root)
        self._ww_warm: dict[str, WarmAssets] = {}
        self._ww_resolved: dict[str, ww.TaskVectorBank] = {}

    def reset_config(self, new_config: dict) -> bool:
        self.config = new_config
        return True  # the warm state is keyed by θ0 and bank, so any trial can reuse this actor

    def _ww_run(self, trial: Trial) -> list[dict]:
        if trial.base_key not in self._ww_warm:
            self._ww_warm[trial.base_key] = WarmAssets.load(ModelSpec(**trial.model), self._ww_root)
        bank = self._ww_bank(trial.bank_key, self._ww_warm[trial.base_key].theta0_visual)
        references = self._ww_references[trial.bank_key]
        return run_trial(trial, bank, self._ww_warm[trial.base_key], self._ww_root, references)

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        return {}  # a trial is one step whose output is its Parquet part: nothing else to persist

    def load_checkpoint(self, checkpoint: dict) -> None:
        return None

    def _ww_bytes_loaded(self) -> int:
        return sum(assets.bytes_loaded for assets in self._ww_warm.values())

    def _ww_bank(self, key: str, theta0_visual: dict) -> ww.TaskVectorBank:
        if key not in self._ww_resolved:
            shared: SharedBank | BankFile = ray.get(self._ww_banks[key])
            self._ww_resolved[key] = open_for_trial(shared, self._ww_root, theta0_visual)
        return self._ww_resolved[key]

    def step(self) -> dict:
        started_at, start = time.time(), time.perf_counter()
        disk_before, loaded_before = _disk_read_bytes(), self._ww_bytes_loaded()
        trial = Trial(**self.config["trial"])
        for attempt in range(1 + TRIAL_RETRIES):
            try:
                with trial_limits(self._ww_limits.get("timeout_s"), self._ww_limits.get("memory_gb")):
                    rows = self._ww_run(trial)
                status = "ok"
                break
            except (TrialLimitExceeded, TrialFault) as exc:  # would recur: recorded at once
                rows = error_rows(trial, f"{type(exc).__name__}: {exc}")
                status = "error"
                self._ww_warm.clear()  # whatever the interrupted trial left behind is not reused
                break
            except Exception as exc:  # retried, then recorded as an error row; the grid goes on
                rows = error_rows(
                    trial, f"{type(exc).__name__}: {exc} (attempt {attempt + 1})\n{traceback.format_exc()}"
                )
                status = "error"
                self._ww_warm.pop(trial.base_key, None)  # a retry starts from freshly loaded assets
        results.write_part(self._ww_root, rows, trial.key)
        ok = [r for r in rows if r["status"] == "ok"]
        disk_after = _disk_read_bytes()
        return {
            "done": True,
            "status": status,
            "trial_key": trial.key,
            "trial_seconds": time.perf_counter() - start,
            "started_at": started_at,
            "ended_at": time.time(),
            "worker_pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "assets_read_bytes": self._ww_bytes_loaded() - loaded_before,
            "disk_read_bytes": None if disk_before is None or disk_after is None else disk_after - disk_before,
            "mean_accuracy": sum(r["accuracy"] for r in ok) / len(ok) if ok else float("nan"),
            "merge_seconds": ok[0]["merge_seconds"] if ok else float("nan"),
            "eval_seconds": sum(r["eval_seconds"] for r in ok) if ok else float("nan"),
        }


def _disk_read_bytes() -> int | None:
    """Bytes this process made the kernel fetch from storage (Linux ``/proc/self/io``), else None."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("read_bytes:"))
    except (OSError, StopIteration, ValueError):
        return None


def run_grid(
    trials: list[Trial],
    bank_refs: dict,
    references: dict[str, dict[str, dict]],
    storage: StorageRoot,
    resources: ResourcesSpec,
    name: str,
    plugins: list[str] | tuple[str, ...] = (),
    on_trial_done=None,
) -> list[dict]:
    """Run ``trials`` on Ray Tune; return each trial's reported metrics.

    ``plugins`` are the spec's plugin modules, imported by every trial worker. A trial whose worker
    died (killed by the kernel's OOM killer, a segfault in native code) cannot write its own error
    row; it is written here, from what Tune reports, so that every trial ends as a row.
    ``on_trial_done`` is called with each finished trial's metrics (``{"status": "error"}`` if it died).
    """
    if not trials:
        return []
    # Tune's own reporter prints an experiment box and a TensorBoard hint even at verbose=0; the
    # legacy one is silent at 0, and the harness shows its own progress (--debug sets it to 1)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    limits = {"timeout_s": resources.trial_timeout_s, "memory_gb": resources.trial_memory_gb}
    trainable = tune.with_parameters(
        MergeTrial,
        banks=bank_refs,
        references=references,
        root=str(storage.root),
        limits=limits,
        plugins=tuple(plugins),
    )
    trainable = tune.with_resources(trainable, {"cpu": resources.trial_cpus, "gpu": resources.trial_gpus})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.to_config() for t in trials])},
        tune_config=tune.TuneConfig(
            reuse_actors=True,
            max_concurrent_trials=resources.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage.runs / "grid"),
            stop={"training_iteration": 1},
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=MAX_WORKER_FAILURES),
            callbacks=[_TrialsDone(on_trial_done)] if on_trial_done is not None else None,
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False, checkpoint_frequency=0),
        ),
    )
    grid = tuner.fit()
    return [_metrics_or_error_row(r, storage) for r in grid]


class _TrialsDone(tune.Callback):
    """Tells the driver's console each time a trial ends (Tune calls back in the driver process)."""

    def __init__(self, fn):
        self._fn = fn

    def __getstate__(self) -> dict:
        return {"_fn": None}  # Tune pickles its state for restores; the console stays in this process

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self._fn is not None:
            self._fn(trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        if self._fn is not None:
            self._fn({"status": "error"})


def _metrics_or_error_row(result, storage: StorageRoot) -> dict:
    if (result.metrics and "status" in result.metrics) or result.error is None or not result.config:
        return result.metrics or {}
    trial = Trial(**result.config["trial"])
    part = results.part_path(storage, trial.model["name"], SetupSpec(**trial.setup).name, trial.key)
    if part.exists() and results.trial_status(storage).get(trial.key) == "ok":
        return {"status": "ok"}  # the trial wrote its rows, then its worker died before reporting
    text = str(result.error).strip()
    detail = next((line for line in text.splitlines() if line.strip()), type(result.error).__name__)
    results.write_part(
        storage,
        error_rows(trial, f"trial worker failed (after {1 + MAX_WORKER_FAILURES} attempts): {detail}\n{text}"),
        trial.key,
    )
    return {"status": "error"}
