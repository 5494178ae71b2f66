"""Spec → plan: the expert fine-tunes and merge-and-evaluate trials a spec implies, each with a key.

The plan is pure data (plain dicts travel to Ray workers), computed without touching Ray or
loading a model, so ``--dry-run`` is instant and the plan can be checked against what the storage
root already holds.

Keys carry provenance (`benchmark.spec.keys`): an expert's key hashes its θ0, task, data, recipe and
the fine-tuning revision; a trial's key hashes its bank, the merger's *resolved* hyper-parameters
(defaults filled in, so writing a default or omitting it is the same trial), the merger's and the
pooling's registry revisions, a hash of the module source of any merger or pooling defined outside
``ww`` (a spec plugin), and the revisions of evaluation, heads and test tensors. A changed method
or stage therefore re-runs exactly the trials it reaches.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import itertools
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ww
from benchmark.model.pretrained import base_key, base_label
from benchmark.results.storage import StorageRoot, safe_name
from benchmark.spec.keys import canonical_json, content_key, revision
from benchmark.spec.schema import NO_POOLING, ORACLE, ModelSpec, SetupSpec, Spec
from benchmark.trials import eval_cache

#: Version of the results schema written by this code (a column of every row). 2: the
#: ``*_revision`` columns and resolved ``merger_params``; 3: per-example outcomes (``correct_bits``)
#: and ``balanced_accuracy``. Rows of older versions read with the newer columns null.
SCHEMA_VERSION = 3


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
        """``<root>/experts/<model>/<pretrained>/<setup>/<seed>/<task>.safetensors`` (docs/DESIGN.md)."""
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
    revisions: dict = field(default_factory=dict)
    """The code revisions the key hashes (merger, pooling, eval, heads, finetune, pretrain,
    toy_data; ``sources``: plugin module digests); recorded in the trial's rows."""

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


def expert_job(
    model: ModelSpec, setup: SetupSpec, task: str, seed: int, previous: ExpertJob | None = None
) -> ExpertJob:
    bkey = base_key(model)
    payload = {
        "base": bkey,
        "task": task,
        "seed": seed,
        "data": setup.data,
        "finetune": setup.finetune.key_payload(),
        "init_from": previous.key if previous else None,
        "finetune_revision": revision("finetune"),
        "tensors": eval_cache.tensor_revision(task),
    }
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


def effective_params(merger: str, params: dict, seed: int) -> dict:
    """The hyper-parameters a trial runs ``merger`` with: the spec's, the trial's seed for a random
    merger given none, every other default filled in (`ww.registry.MergerRecord.resolve`)."""
    record = ww.MERGERS[merger]
    params = dict(params)
    if "seed" in record.defaults:
        params.setdefault("seed", seed)
    return record.resolve(params)


def source_digest(function, memo: dict[str, str | None] | None = None) -> str | None:
    """SHA-256 (16 hex) of the source of the module defining ``function`` when that module is not
    part of ``ww`` (a spec plugin, a researcher's own module); None for ``ww``'s own methods, which
    carry registry revisions instead.

    The file's bytes are read afresh (a ``memo`` shares them within one plan), so editing a plugin
    changes the keys of the trials that use it on the next plan."""
    module_name = getattr(function, "__module__", None) or ""
    if module_name == "ww" or module_name.startswith("ww."):
        return None
    if memo is not None and module_name in memo:
        return memo[module_name]
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    try:
        path = inspect.getsourcefile(module)
        text = Path(path).read_bytes() if path else inspect.getsource(module).encode()
    except (OSError, TypeError):
        raise ValueError(
            f"cannot read the source of module {module_name!r} (defining "
            f"{getattr(function, '__qualname__', function)!r}) to key its trials; define plugin mergers "
            "in a module file (a spec's plugins:), not interactively"
        ) from None
    digest = hashlib.sha256(text).hexdigest()[:16]
    if memo is not None:
        memo[module_name] = digest
    return digest


def method_provenance(pooling: str, merger: str, memo: dict[str, str | None]) -> dict:
    """Revisions (and plugin source digests) of the merger and of the pooling of one trial."""
    record = ww.MERGERS[merger]
    out: dict = {"merger": record.revision, "pooling": None, "sources": {}}
    source = source_digest(record.function, memo)
    if source is not None:
        out["sources"][f"merger:{merger}"] = source
    if pooling in ww.POOLINGS:
        pooled = ww.POOLINGS[pooling]
        out["pooling"], function = pooled.revision, pooled.kernel
    elif pooling in ww.MERGERS:
        pooled = ww.MERGERS[pooling]
        out["pooling"], function = pooled.revision, pooled.function
    else:
        function = None  # none / oracle: no pooling
    source = source_digest(function, memo) if function is not None else None
    if source is not None:
        out["sources"][f"pooling:{pooling}"] = source
    return out


def stage_revisions(model: ModelSpec) -> dict:
    """Revisions of the harness stages a trial's result depends on (`benchmark.spec.keys.REVISIONS`)."""
    out = {stage: revision(stage) for stage in ("eval", "heads", "finetune")}
    if model.is_toy:
        out.update(pretrain=revision("pretrain"), toy_data=revision("toy_data"))
    return out


def build_plan(spec: Spec) -> Plan:
    spec_hash = content_key("spec", spec.model_dump(mode="json"))
    plan = Plan(spec=spec, spec_hash=spec_hash)
    seen: dict[str, ExpertJob] = {}
    sources: dict[str, str | None] = {}
    planned: set[str] = set()
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
            params = effective_params(merger.name, merger.params, seed)
            revisions = {**method_provenance(pooling, merger.name, sources), **stage_revisions(model)}
            axes = {
                "bank": bank_key,
                "merger": merger.name,
                "merger_params": params,
                # a merger pooling the candidates runs with its defaults
                "pooling_params": ww.MERGERS[pooling].resolve() if pooling in ww.MERGERS else None,
                "revisions": revisions,
                "pooling": pooling,
                "collaborative": (variant == "collaborative") if weave else None,
                "lambdas": [spec.fixed_lambda] if policy == "fixed" else merger.grid(),
                "seed": seed,
                "eval": {
                    "kind": setup.kind,
                    "evaluations": [asdict(e) for e in setup.evaluations()],
                    "data": setup.data,
                    "tensors": {e.task: eval_cache.tensor_revision(e.task) for e in setup.evaluations()},
                },
                "schema": SCHEMA_VERSION,
            }
            key = content_key("trial", axes)
            if key in planned:
                continue  # e.g. a random merger's explicit seed equal to this trial's seed: the same trial
            planned.add(key)
            plan.trials.append(
                Trial(
                    key=key,
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
                    merger_params=params,
                    pooling=pooling,
                    collaborative=axes["collaborative"],
                    lambda_policy=policy,
                    lambdas=tuple(axes["lambdas"]),
                    lam=spec.fixed_lambda if policy == "fixed" else None,
                    revisions=revisions,
                )
            )
    plan.experts = list(seen.values())
    return plan


def merger_params_json(params: dict) -> str:
    return canonical_json(params)
