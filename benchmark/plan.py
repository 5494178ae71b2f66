"""Spec → plan: the expert fine-tunes and merge-and-evaluate trials a spec implies, each with a key.

The plan is pure data (plain dicts travel to Ray workers), computed without touching Ray or
loading a model, so ``--dry-run`` is instant and the plan can be checked against what the storage
root already holds.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark.keys import canonical_json, content_key
from benchmark.models import base_key, base_label
from benchmark.specs import NO_POOLING, ORACLE, ModelSpec, SetupSpec, Spec
from benchmark.storage import StorageRoot, safe_name

#: Version of the results schema written by this code (a column of every row). 2: per-example
#: outcomes (``correct_bits``) and ``balanced_accuracy``.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class ExpertJob:
    """One expert: θ0 fine-tuned on one task of one setup with one seed."""

    key: str
    model: dict
    base_key: str
    pretrained_label: str
    setup: str
    task: str
    seed: int
    data: dict
    finetune: dict
    init_from: str | None = None  # sequential fine-tuning: key of the previous split's expert
    init_task: str | None = None  # ... and its task (same model/setup/seed folder)

    def path(self, storage: StorageRoot) -> Path:
        """``<root>/experts/<model>/<pretrained>/<setup>/<seed>/<task>.safetensors`` (DESIGN.md)."""
        return (
            storage.experts
            / safe_name(self.model["name"])
            / self.pretrained_label
            / safe_name(self.setup)
            / str(self.seed)
            / f"{safe_name(self.task)}.safetensors"
        )

    def manifest_path(self, storage: StorageRoot) -> Path:
        return self.path(storage).with_suffix(".manifest.json")

    def init_path(self, storage: StorageRoot) -> Path | None:
        """Weights this expert starts from instead of θ0 (the previous split, when sequential)."""
        if self.init_task is None:
            return None
        return self.path(storage).with_name(f"{safe_name(self.init_task)}.safetensors")


@dataclass(frozen=True)
class Trial:
    """One merge-and-evaluate trial: (model × setup × merger × pooling × variant × seed)."""

    key: str
    run_name: str
    spec_hash: str
    model: dict
    base_key: str
    pretrained_label: str
    setup: dict
    seed: int
    bank_key: str
    expert_keys: tuple[str, ...]
    merger: str
    merger_params: dict
    pooling: str
    collaborative: bool | None
    lambda_policy: str
    lambdas: tuple[float, ...]
    lam: float | None

    def to_config(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    spec: Spec
    spec_hash: str
    experts: list[ExpertJob] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)

    def banks(self) -> dict[str, list[ExpertJob]]:
        """Bank key → its experts in task order (one bank per model × setup × seed)."""
        by_key = {e.key: e for e in self.experts}
        return {t.bank_key: [by_key[k] for k in t.expert_keys] for t in self.trials}


def expert_job(model: ModelSpec, setup: SetupSpec, task: str, seed: int, previous: ExpertJob | None = None) -> ExpertJob:
    bkey = base_key(model)
    payload = {"base": bkey, "task": task, "seed": seed, "data": setup.data, "finetune": setup.finetune.key_payload(),
               "init_from": previous.key if previous else None}
    return ExpertJob(
        key=content_key("expert", payload),
        model=model.model_dump(mode="json"),
        base_key=bkey,
        pretrained_label=base_label(model),
        setup=setup.name,
        task=task,
        seed=seed,
        data=setup.data.model_dump(mode="json"),
        finetune=setup.finetune.model_dump(mode="json"),
        init_from=previous.key if previous else None,
        init_task=previous.task if previous else None,
    )


def expert_chain(model: ModelSpec, setup: SetupSpec, seed: int) -> list[ExpertJob]:
    """The setup's experts in order; with sequential fine-tuning each starts from the previous one."""
    jobs: list[ExpertJob] = []
    for task in setup.expert_tasks():
        previous = jobs[-1] if jobs and setup.finetune.mode == "sequential" else None
        jobs.append(expert_job(model, setup, task, seed, previous))
    return jobs


def build_plan(spec: Spec) -> Plan:
    spec_hash = content_key("spec", spec.model_dump(mode="json"))
    plan = Plan(spec=spec, spec_hash=spec_hash)
    seen: dict[str, ExpertJob] = {}
    for model, setup, seed in itertools.product(spec.models, spec.setups, spec.seeds):
        jobs = expert_chain(model, setup, seed)
        for job in jobs:
            seen.setdefault(job.key, job)
        expert_keys = tuple(j.key for j in jobs)
        bank_key = content_key("bank", expert_keys)
        for merger, pooling, variant in itertools.product(spec.mergers, spec.poolings, spec.variants):
            if pooling in (NO_POOLING, ORACLE) and variant != spec.variants[0]:
                continue  # fixed λ and the oracle sweep have no variant: one trial, not one per variant
            policy = {NO_POOLING: "fixed", ORACLE: "oracle"}.get(pooling, "weave")
            weave = policy == "weave"
            axes = {
                "bank": bank_key,
                "merger": merger.name,
                "merger_params": merger.params,
                "pooling": pooling,
                "collaborative": (variant == "collaborative") if weave else None,
                "lambdas": [spec.fixed_lambda] if policy == "fixed" else merger.grid(),
                "seed": seed,
                "eval": {"kind": setup.kind, "evaluations": [asdict(e) for e in setup.evaluations()],
                         "data": setup.data},
                "schema": SCHEMA_VERSION,
            }
            plan.trials.append(
                Trial(
                    key=content_key("trial", axes),
                    run_name=spec.name,
                    spec_hash=spec_hash,
                    model=model.model_dump(mode="json"),
                    base_key=base_key(model),
                    pretrained_label=base_label(model),
                    setup=setup.model_dump(mode="json"),
                    seed=seed,
                    bank_key=bank_key,
                    expert_keys=expert_keys,
                    merger=merger.name,
                    merger_params=dict(merger.params),
                    pooling=pooling,
                    collaborative=axes["collaborative"],
                    lambda_policy=policy,
                    lambdas=tuple(axes["lambdas"]),
                    lam=spec.fixed_lambda if policy == "fixed" else None,
                )
            )
    plan.experts = list(seen.values())
    return plan


def merger_params_json(params: dict) -> str:
    return canonical_json(params)
