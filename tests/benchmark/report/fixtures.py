"""Synthetic result roots with known numbers for the report tests, written by the project's own
Parquet writer (``benchmark.results.store.write_part``), so the reports read exactly what a run writes.

The ``paper_root`` world (one seed; per-trial task means in brackets, tasks ±0.1 around them):

    setup s1 (tasks a, b)            setup s2 (tasks c, d)
    ties  none  m1 .50  m2 .40       ties  none  m1 .30  m2 .20
    ties  avg A*  .60      .46       ties  avg A*  .36      .34
    ties  randmix A* .55   .45       ties  randmix A* .31   .21
    ties  magmax A   .20   (none)
    ta    none  m1 .20  m2 .30
    ta    avg A*  .50   (none)
    ties  oracle m1: λ .5 → a .5 b .5; λ 1 → a .75 b .55; λ 1.5 → a .4 b .9 (tie 1 vs 1.5 → 1)

Expert accuracy of every task 0.8, zero-shot 0.1 ... so normalised = accuracy / 0.8.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

from benchmark.results import store as results
from benchmark.results.storage import StorageRoot

EXPERT = 0.8
ZEROSHOT = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.1}
TASKS = {"s1": ("a", "b"), "s2": ("c", "d")}
_keys = itertools.count()


def row(**fields) -> dict:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    base = dict(
        schema_version=1,
        run_name="synthetic",
        status="ok",
        model="m1",
        setup="s1",
        setup_kind="mtl",
        finetune_mode="independent",
        n_tasks=2,
        merger="ties",
        merger_params="{}",
        pooling="avg",
        collaborative=True,
        lambda_policy="weave",
        lambdas=[0.5, 1.0, 1.5],
        lam=None,
        seed=0,
        n_examples=100,
        expert_accuracy=EXPERT,
        uses_test_data=False,
        started_at=now,
        finished_at=now,
        merge_seconds=0.1,
        eval_seconds=0.1,
        peak_memory_mb=10.0,
    )
    base.update(fields)
    if "normalized_accuracy" not in fields and base.get("accuracy") is not None and base["expert_accuracy"]:
        base["normalized_accuracy"] = base["accuracy"] / base["expert_accuracy"]
    return base


def write_trial(
    storage: StorageRoot,
    accs: dict[str, float],
    *,
    pooling: str = "avg",
    collaborative=True,
    key: str | None = None,
    **fields,
) -> str:
    """One trial part: one row per eval task; the λ policy follows the pooling as the plan sets it."""
    key = key or f"t{next(_keys)}"
    if pooling == "none":
        fields = {"lambda_policy": "fixed", "lam": 1.0, "lambdas": [1.0], **fields}
        collaborative = None
    rows = [
        row(trial_key=key, pooling=pooling, collaborative=collaborative, eval_task=task, accuracy=acc, **fields)
        for task, acc in accs.items()
    ]
    results.write_part(storage, rows, key)
    return key


def write_oracle(storage: StorageRoot, curve: dict[float, dict[str, float]], key: str | None = None, **fields) -> str:
    """One oracle trial: rows per (λ, task), flagged as using test data, as ``run_trial`` writes them."""
    key = key or f"o{next(_keys)}"
    rows = [
        row(
            trial_key=key,
            pooling="oracle",
            collaborative=None,
            lambda_policy="oracle",
            lam=lam,
            eval_task=task,
            accuracy=acc,
            uses_test_data=True,
            **fields,
        )
        for lam, per_task in curve.items()
        for task, acc in per_task.items()
    ]
    results.write_part(storage, rows, key)
    return key


def write_references(storage: StorageRoot, model: str = "m1", setup: str = "s1", seed: int = 0) -> None:
    for kind in ("zeroshot", "expert"):
        rows = [
            row(
                trial_key=f"{kind}-{model}-{setup}-{seed}",
                model=model,
                setup=setup,
                seed=seed,
                merger=kind,
                pooling="-",
                collaborative=None,
                lambda_policy="reference",
                lambdas=[],
                eval_task=task,
                accuracy=ZEROSHOT[task] if kind == "zeroshot" else EXPERT,
            )
            for task in TASKS[setup]
        ]
        results.write_part(storage, rows, rows[0]["trial_key"])


def around(mean: float, setup: str = "s1") -> dict[str, float]:
    """Two task accuracies whose mean is ``mean`` (so step 1 of the aggregation is exercised)."""
    first, second = TASKS[setup]
    return {first: round(mean - 0.1, 10), second: round(mean + 0.1, 10)}


def paper_root(tmp_path) -> StorageRoot:
    storage = StorageRoot.at(tmp_path / "root").ensure()
    table = {
        ("s1", "ties", "none", None): {"m1": 0.50, "m2": 0.40},
        ("s1", "ties", "avg", True): {"m1": 0.60, "m2": 0.46},
        ("s1", "ties", "randmix", True): {"m1": 0.55, "m2": 0.45},
        ("s1", "ties", "magmax", False): {"m1": 0.20},
        ("s1", "ta", "none", None): {"m1": 0.20, "m2": 0.30},
        ("s1", "ta", "avg", True): {"m1": 0.50},
        ("s2", "ties", "none", None): {"m1": 0.30, "m2": 0.20},
        ("s2", "ties", "avg", True): {"m1": 0.36, "m2": 0.34},
        ("s2", "ties", "randmix", True): {"m1": 0.31, "m2": 0.21},
    }
    for (setup, merger, pooling, collaborative), per_model in table.items():
        for model, mean in per_model.items():
            write_trial(
                storage,
                around(mean, setup),
                model=model,
                setup=setup,
                merger=merger,
                pooling=pooling,
                collaborative=collaborative,
            )
    for model in ("m1", "m2"):
        for setup in ("s1", "s2"):
            write_references(storage, model, setup)
    write_oracle(
        storage,
        {0.5: {"a": 0.5, "b": 0.5}, 1.0: {"a": 0.75, "b": 0.55}, 1.5: {"a": 0.4, "b": 0.9}},
        model="m1",
        setup="s1",
        merger="ties",
    )
    return storage
