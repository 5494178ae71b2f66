"""One trial's work, independent of Ray: merge (or weave) the bank, add it to θ0, evaluate.

:class:`WarmAssets` holds θ0, its heads and the cached eval tensors; a reused Tune actor keeps it
between trials, so a trial costs a merge plus a forward pass over the test sets and nothing else.
"""

from __future__ import annotations

import math
import resource
import socket
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch

import ww
from benchmark.model.head_cache import load_head
from benchmark.model.pretrained import LoadedModel, load_base_model
from benchmark.report.paired import pack_correct
from benchmark.results.storage import StorageRoot
from benchmark.spec.keys import KEY_LAYOUT, canonical_json
from benchmark.spec.plan import SCHEMA_VERSION, Trial
from benchmark.spec.schema import DataSpec, ModelSpec, SetupSpec
from benchmark.trials import eval_cache
from benchmark.trials.evaluation import balanced_accuracy, evaluate
from benchmark.trials.limits import TrialFault


class NonFiniteResultError(TrialFault):
    """A merge produced NaN/Inf weights or a non-finite accuracy (recorded, never reported as a number)."""


@dataclass
class WarmAssets:
    """θ0 plus per-task heads and eval tensors, loaded once per worker and reused by its trials."""

    base: LoadedModel
    theta0_visual: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    tests: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    bytes_loaded: int = 0
    """Bytes of θ0, heads and eval tensors this worker has read from the storage root (``perf
    grid`` checks that a warm worker's later trials read nothing)."""

    @classmethod
    def load(cls, model: ModelSpec, storage: StorageRoot) -> "WarmAssets":
        base = load_base_model(model, storage)
        bytes_loaded = sum(t.nbytes for t in base.model.state_dict().values())
        assets = cls(base=base, theta0_visual=base.visual_state(), bytes_loaded=bytes_loaded)
        base.model.to(trial_device())  # θ0's copy for merging stays on the CPU, next to the bank
        return assets

    def head(self, storage: StorageRoot, task: str) -> torch.Tensor:
        if task not in self.heads:
            self.heads[task] = load_head(storage, self.base, task)
            self.bytes_loaded += self.heads[task].nbytes
        return self.heads[task]

    def test_split(self, storage: StorageRoot, task: str, data: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
        key = (task, data.model_dump_json())
        if key not in self.tests:
            images, labels = eval_cache.load_split(storage, task, "test", data, resolution=self.base.resolution)
            with warnings.catch_warnings():  # read-only memory map: evaluation never writes to it
                warnings.filterwarnings("ignore", message=".*not writable.*")
                self.tests[key] = (torch.from_numpy(images), torch.from_numpy(np.asarray(labels)))
            self.bytes_loaded += images.nbytes + np.asarray(labels).nbytes
        return self.tests[key]

    def load_merged(self, vector: dict[str, torch.Tensor]) -> None:
        """Put θ0 + vector into the model's image encoder (entries not in the vector stay θ0).

        Refuses a non-finite vector: NaN weights still yield an accuracy (argmax of NaN logits picks
        a class), which would enter the leaderboard as a plausible-looking number.
        """
        for name, value in vector.items():
            # one reduction per tensor; the element-wise look only when the sum is not finite
            if value.is_floating_point() and not math.isfinite(float(value.sum())):
                bad = int((~torch.isfinite(value)).sum())
                if not bad:
                    continue  # finite values whose sum overflowed
                raise NonFiniteResultError(
                    f"the merged task vector holds {bad} non-finite value(s) in tensor {name!r} "
                    f"(of {sum(v.numel() for v in vector.values())} in all); the merger's output "
                    "is unusable (check its hyper-parameters and the experts)"
                )
        merged = ww.apply_task_vector(self.theta0_visual, vector)
        self.base.model.visual.load_state_dict(merged)


def trial_device() -> torch.device:
    """The GPU Ray gave this worker, if any and if torch can use it; else the CPU.

    Ray sets ``CUDA_VISIBLE_DEVICES`` to the worker's share (a fraction of a GPU is still that
    GPU), so ``cuda`` is the right device whenever Ray assigned one. Logical GPUs without CUDA (the
    CPU test cluster) fall back to the CPU.
    """
    import ray

    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def merger_params(trial: Trial) -> dict:
    """The trial's hyper-parameters: resolved by the plan (`benchmark.spec.plan.effective_params`); a
    random merger without a seed (a trial planned before resolution) gets the trial's seed."""
    params = dict(trial.merger_params)
    if "seed" in ww.MERGERS[trial.merger].defaults:
        params.setdefault("seed", trial.seed)
    return params


def merged_vector(trial: Trial, bank: ww.TaskVectorBank) -> dict[str, torch.Tensor]:
    """The vector added to θ0: λ·M for the fixed-λ baseline, the pooled candidates for weaving."""
    if trial.lambda_policy == "fixed":
        merged = ww.merge(trial.merger, bank, **merger_params(trial))
        return {name: trial.lam * value for name, value in merged.items()}
    return ww.weave(
        bank,
        trial.merger,
        lambdas=list(trial.lambdas),
        pooling=trial.pooling,
        collaborative=bool(trial.collaborative),
        seed=trial.seed,
        merger_params=merger_params(trial),
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def base_row(trial: Trial) -> dict:
    setup = SetupSpec(**trial.setup)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_name": trial.run_name,
        "trial_key": trial.key,
        "spec_hash": trial.spec_hash,
        "bank_key": trial.bank_key,
        "code_version": KEY_LAYOUT,
        "host": socket.gethostname(),
        "model": trial.model["name"],
        "pretrained": trial.pretrained_label,
        "setup": setup.name,
        "setup_kind": setup.kind,
        "finetune_mode": setup.finetune.mode,
        "n_tasks": len(setup.expert_tasks()),
        "merger": trial.merger,
        "merger_params": canonical_json(trial.merger_params),
        "pooling": trial.pooling,
        "collaborative": trial.collaborative,
        "lambda_policy": trial.lambda_policy,
        "lambdas": [float(x) for x in trial.lambdas],
        "lam": trial.lam,
        "seed": trial.seed,
        "uses_test_data": False,
        **revision_columns(trial.revisions),
    }


def revision_columns(revisions: dict) -> dict:
    """The provenance columns of a row from a trial's revisions (`benchmark.spec.plan.Trial.revisions`)."""
    return {
        **{f"{name}_revision": revisions.get(name) for name in ("merger", "pooling", "eval", "heads", "finetune")},
        "revisions": canonical_json(revisions) if revisions else None,
    }


def _evaluate(
    trial: Trial,
    assets: WarmAssets,
    storage: StorageRoot,
    references: dict[str, dict],
    task: str,
    lam: float | None,
    n_merged: int,
) -> dict:
    """Evaluate the model currently loaded in ``assets`` on one eval task; one result row."""
    setup = SetupSpec(**trial.setup)
    images, labels = assets.test_split(storage, task, setup.data)
    start = time.perf_counter()
    result = evaluate(assets.base.model, assets.head(storage, task), images, labels, outcomes=True)
    eval_seconds = time.perf_counter() - start
    if not np.isfinite(result["accuracy"]):
        raise NonFiniteResultError(f"accuracy on {task} is not finite")
    ref = references[task]
    accuracy = float(result["accuracy"])
    expert = ref.get("expert_accuracy")
    return {
        **base_row(trial),
        "n_tasks": n_merged,
        "lam": lam,
        "eval_task": task,
        "n_examples": int(result["n_examples"]),
        "n_correct": int(result["n_correct"]),
        "accuracy": accuracy,
        "balanced_accuracy": balanced_accuracy(result["correct"], labels),
        "correct_bits": pack_correct(result["correct"]),
        "expert_accuracy": expert,
        "zeroshot_accuracy": ref["zeroshot_accuracy"],
        "normalized_accuracy": accuracy / expert if expert else None,
        "eval_seconds": eval_seconds,
    }


def _sub_bank(bank: ww.TaskVectorBank, experts: tuple[int, ...]):
    """The bank restricted to some experts (DG merges all but the held-out domain): a view of
    the bank's rows, never a copy (`ww.TaskVectorBank.select`)."""
    return bank.select(experts)


@ww.kernels.expect_many_merges()  # a trial actor merges trial after trial: compiling pays (ww.kernels)
def run_trial(
    trial: Trial, bank: ww.TaskVectorBank, assets: WarmAssets, storage: StorageRoot, references: dict[str, dict]
) -> list[dict]:
    """Merge, evaluate, return one row per evaluation (``references``: eval task → zs/expert acc).

    The setup decides what is merged and where it is evaluated (MTL: all experts, each task; CIL:
    all experts, the joint task; DG: all but one domain, that domain). The oracle policy computes M
    once per merge and evaluates θ0 + λ·M for every λ of the grid on the test sets — the privileged
    reference of the paper — so its rows are flagged ``uses_test_data``.
    """
    started = _now()
    setup = SetupSpec(**trial.setup)
    groups: dict[tuple[int, ...], list[str]] = {}
    for evaluation in setup.evaluations():
        groups.setdefault(evaluation.experts, []).append(evaluation.task)
    rows: list[dict] = []
    merge_seconds = 0.0
    for experts, tasks in groups.items():
        sub = _sub_bank(bank, experts)
        start = time.perf_counter()
        if trial.lambda_policy == "oracle":
            merged = ww.merge(trial.merger, sub, **merger_params(trial))
            merge_seconds += time.perf_counter() - start
            for lam in trial.lambdas:
                assets.load_merged({name: lam * value for name, value in merged.items()})
                rows += [_evaluate(trial, assets, storage, references, t, float(lam), len(experts)) for t in tasks]
        else:
            vector = merged_vector(trial, sub)
            merge_seconds += time.perf_counter() - start
            assets.load_merged(vector)
            rows += [_evaluate(trial, assets, storage, references, t, trial.lam, len(experts)) for t in tasks]
    finished = _now()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for row in rows:
        row.update(
            status="ok",
            started_at=started,
            finished_at=finished,
            peak_memory_mb=peak,
            merge_seconds=merge_seconds,
            uses_test_data=trial.lambda_policy == "oracle",
        )
    return rows


def error_rows(trial: Trial, error: str) -> list[dict]:
    now = _now()
    return [{**base_row(trial), "status": "error", "error": error[-2000:], "started_at": now, "finished_at": now}]


def reference_rows(
    trial_like: Trial,
    references: dict[str, dict],
    experts: dict[str, float],
    zeroshot_bits: dict[str, bytes | None] | None = None,
) -> dict[str, list[dict]]:
    """Zero-shot rows (per eval task) and expert rows (each expert on its own task's test split).

    Returned per kind so each kind is one Parquet part of its own, next to the trials. Zero-shot rows
    carry θ0's per-example outcomes (``zeroshot_bits``, per eval task) when known, so a merge can be
    compared with not merging at all, example by example.
    """
    now = _now()
    out: dict[str, list[dict]] = {"zeroshot": [], "expert": []}
    entries = [("zeroshot", task, ref["zeroshot_accuracy"], ref) for task, ref in references.items()]
    entries += [("expert", task, acc, references.get(task, {})) for task, acc in experts.items()]
    for kind, task, acc, ref in entries:
        row = base_row(trial_like)
        expert = ref.get("expert_accuracy", acc if kind == "expert" else None)
        # a reference involves no merger or pooling; its experts and zero-shot numbers do carry the
        # fine-tuning, heads and evaluation revisions
        stages = {k: v for k, v in trial_like.revisions.items() if k not in ("merger", "pooling", "sources")}
        row.update(revision_columns(stages))
        row.update(
            trial_key=f"{kind}-{trial_like.bank_key}",
            merger=kind,
            merger_params="{}",
            pooling="-",
            collaborative=None,
            lambda_policy="reference",
            lambdas=[],
            lam=None,
            n_tasks=1,
            eval_task=task,
            n_examples=ref.get("n_examples"),
            accuracy=acc,
            expert_accuracy=expert,
            zeroshot_accuracy=ref.get("zeroshot_accuracy"),
            normalized_accuracy=acc / expert if expert else None,
            status="ok",
            started_at=now,
            finished_at=now,
            uses_test_data=False,
        )
        if kind == "zeroshot" and (zeroshot_bits or {}).get(task) is not None:
            row["correct_bits"] = zeroshot_bits[task]
        out[kind].append(row)
    return out
