"""Grid specs: the YAML a researcher writes, validated at the boundary with pydantic.

A spec names the axes of one experiment (models × setups × mergers × poolings × variants × seeds)
and the recipes that produce its experts. Unknown keys are errors with the closest valid key
suggested, because a typo in a hand-written spec silently falling back to a default would cost a
cluster-day.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

import ww

#: Pooling axis value meaning "no weaving": the merger at a fixed λ (the paper's data-free baseline).
NO_POOLING = "none"
#: Pooling axis value for the privileged reference: every λ of the grid evaluated on test data.
ORACLE = "oracle"
VARIANTS = ("collaborative", "plain")


class SpecError(ValueError):
    """A spec that cannot be run; the message says what is wrong and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PretrainSpec(_Strict):
    """Toy only: the contrastive pre-training that gives θ0 its zero-shot ability.

    The defaults are the recipe of the θ0 shipped with the package (``benchmark.toy.shipped``): a
    spec that keeps them uses that file, one that changes any of them pre-trains its own θ0."""

    steps: int = Field(600, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(50, ge=0)
    n_pairs: int = Field(40000, ge=16)
    seed: int = Field(0, ge=0)


class ModelSpec(_Strict):
    name: str
    pretrained: str = "openai"
    pretrain: PretrainSpec | None = None

    @property
    def is_toy(self) -> bool:
        return self.pretrained == "toy"

    @model_validator(mode="after")
    def _toy_has_recipe(self) -> "ModelSpec":
        from benchmark.model.names import check_model_name

        check_model_name(self.name, self.pretrained)
        if self.is_toy and self.pretrain is None:
            object.__setattr__(self, "pretrain", PretrainSpec())
        if not self.is_toy and self.pretrain is not None:
            raise ValueError("'pretrain' applies only to pretrained: toy (real models come pretrained)")
        return self


class FinetuneSpec(_Strict):
    """The fine-tuning recipe of docs/METHODS.md §3 (AdamW, cosine with warm-up, grad clip), toy-sizable."""

    mode: Literal["independent", "sequential"] = "independent"
    steps: int = Field(200, ge=1)
    epochs: float | dict[str, float] | None = None
    """Passes over each task's training split instead of ``steps`` (docs/METHODS.md §3 uses per-dataset
    epochs: ``{Cars: 35, DTD: 75, ..., default: 10}``); steps = ceil(epochs · n_train / global batch)."""
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup: int = Field(500, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``auto``: bf16 autocast on GPUs that support it (fp16 with loss scaling otherwise), fp32 on CPU."""
    checkpoint_every: int | None = Field(None, ge=0)
    """Steps between Ray Train checkpoints (an interrupted fine-tune resumes from the last one);
    ``None`` = a size-aware default (see ``benchmark.experts.training.default_checkpoint_every``), ``0`` =
    none. Not part of the expert's content key: it cannot change the weights."""
    keep_checkpoints: bool = False
    """Keep the expert's Ray Train checkpoint after its safetensors and manifest are written (by
    default it is deleted then: the expert itself is the result, the checkpoint only served resuming)."""

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "FinetuneSpec":
        if self.epochs is not None and "steps" in self.model_fields_set:
            raise ValueError("finetune: give steps or epochs, not both")
        values = self.epochs.values() if isinstance(self.epochs, dict) else [self.epochs]
        if self.epochs is not None and (not values or any(v is None or v <= 0 for v in values)):
            raise ValueError(f"finetune.epochs must be positive numbers, got {self.epochs!r}")
        return self

    @model_serializer(mode="wrap")
    def _dump_the_chosen_size(self, handler):
        # plans, trials and workers rebuild the recipe from its dump: an epochs-sized run must not
        # come back with ``steps`` (its unused default) as well, which the check above refuses
        dumped = handler(self)
        if self.epochs is not None:
            dumped.pop("steps", None)
        return dumped

    def epochs_for(self, dataset: str) -> float | None:
        """Epochs for ``dataset`` (``None``: the run is sized by ``steps``)."""
        if not isinstance(self.epochs, dict):
            return self.epochs
        if dataset in self.epochs:
            return self.epochs[dataset]
        if "default" in self.epochs:
            return self.epochs["default"]
        raise ValueError(
            f"finetune.epochs has no entry for {dataset!r} and no 'default'; "
            f"add '{dataset}: N' or 'default: N' (it has {sorted(self.epochs)})"
        )

    def key_payload(self) -> dict:
        """What determines the expert's weights (content keys): everything but checkpointing."""
        return self.model_dump(mode="json", exclude={"checkpoint_every", "keep_checkpoints"})


class DataSpec(_Strict):
    """How many examples to draw per task (toy suites are generated; real datasets ignore n_*)."""

    n_train: int = Field(2000, ge=1)
    n_test: int = Field(1000, ge=1)
    seed: int = Field(0, ge=0)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation inside a trial: merge the experts at ``experts`` (indices), evaluate ``task``."""

    experts: tuple[int, ...]
    task: str


class SetupSpec(_Strict):
    """One of the paper's three setups (docs/METHODS.md §3).

    - ``mtl``: one expert per task in ``tasks``; one merge of all, each task evaluated with its head.
    - ``cil``: ``dataset`` split into ``n_splits`` class chunks, one expert per split (``sequential``
      fine-tuning chains them); one merge evaluated task-agnostically on the whole test set with the
      joint head over all classes.
    - ``dg``: one expert per domain of ``dataset``; for each domain, merge the others and evaluate on
      the held-out one (leave-one-domain-out).
    """

    name: str
    kind: Literal["mtl", "cil", "dg"] = "mtl"
    tasks: list[str] | None = None
    dataset: str | None = None
    n_splits: int | None = Field(None, ge=2)
    domains: list[str] | None = None
    data: DataSpec = DataSpec()
    finetune: FinetuneSpec = FinetuneSpec()

    @model_validator(mode="after")
    def _consistent_kind(self) -> "SetupSpec":
        from benchmark.data import tasks as data

        given = {k for k in ("tasks", "dataset", "n_splits", "domains") if getattr(self, k) is not None}
        allowed = {"mtl": {"tasks"}, "cil": {"dataset", "n_splits"}, "dg": {"dataset", "domains"}}[self.kind]
        required = {"mtl": {"tasks"}, "cil": {"dataset", "n_splits"}, "dg": {"dataset"}}[self.kind]
        if given - allowed:
            raise ValueError(f"kind {self.kind} does not take {sorted(given - allowed)}; it takes {sorted(allowed)}")
        if required - given:
            raise ValueError(f"kind {self.kind} needs {sorted(required - given)}")
        if self.kind == "mtl":
            if len(self.tasks) < 2:
                raise ValueError("an mtl setup needs at least 2 tasks to merge")
            for task in self.tasks:
                data.check_task_name(task)
            _unique(self.tasks, "tasks")
        elif self.kind == "cil":
            data.check_task_name(f"{self.dataset}[0/{self.n_splits}]")
        else:
            data.check_dataset_name(self.dataset)
            known = list(data.domains(self.dataset))
            chosen = self.domains if self.domains is not None else known
            for domain in chosen:
                data.check_task_name(f"{self.dataset}/{domain}")
            _unique(chosen, "domains")
            if not known:
                multi = [d for d in data.dataset_names() if data.domains(d)]
                raise ValueError(
                    f"{self.dataset} has no domains, and leave-one-domain-out needs at least 3 domains; "
                    f"use a multi-domain dataset: {multi}"
                )
            if len(chosen) < 3:
                raise ValueError(
                    f"leave-one-domain-out needs at least 3 domains (merging at least 2 experts); "
                    f"got {chosen}; {self.dataset} has {known}"
                )
        for task in self.expert_tasks():
            self.finetune.epochs_for(data.parse_task(task).dataset)  # every dataset has its epochs
        if self.finetune.mode == "sequential" and self.kind != "cil":
            raise ValueError("finetune.mode: sequential chains class-incremental splits; use it with kind: cil")
        return self

    def expert_tasks(self) -> list[str]:
        """The task each expert is fine-tuned on, in chain order for sequential fine-tuning."""
        if self.kind == "mtl":
            return list(self.tasks)
        if self.kind == "cil":
            return [f"{self.dataset}[{i}/{self.n_splits}]" for i in range(self.n_splits)]
        from benchmark.data import tasks as data

        return [f"{self.dataset}/{d}" for d in (self.domains or data.domains(self.dataset))]

    def evaluations(self) -> list[Evaluation]:
        experts = self.expert_tasks()
        everyone = tuple(range(len(experts)))
        if self.kind == "mtl":
            return [Evaluation(everyone, task) for task in experts]
        if self.kind == "cil":
            return [Evaluation(everyone, self.dataset)]
        return [Evaluation(tuple(j for j in everyone if j != i), task) for i, task in enumerate(experts)]


class MergerSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    lambdas: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _known_merger(cls, name: str) -> str:
        if name not in ww.MERGERS:
            raise ValueError(f"unknown merger {name!r}{_suggest(name, ww.MERGERS)}; known: {sorted(ww.MERGERS)}")
        return name

    @field_validator("lambdas")
    @classmethod
    def _sane_lambdas(cls, lambdas: list[float] | None) -> list[float] | None:
        """λ scales the merged vector added to θ0 (docs/METHODS.md §1), so only positive finite values make
        sense; one grid has one spelling (increasing, each λ once) because the order of the
        candidates is part of what randmix pooling computes and of the trial's key."""
        if lambdas is None:
            return None
        if not lambdas:
            raise ValueError("lambdas is empty; omit it to use the merger's default grid")
        bad = [lam for lam in lambdas if not math.isfinite(lam) or lam <= 0]
        if bad:
            raise ValueError(
                f"lambdas must be positive finite numbers, got {bad}; drop them "
                "(λ scales the merged task vector added to θ0)"
            )
        _unique(lambdas, "lambdas")
        if list(lambdas) != sorted(lambdas):
            raise ValueError(f"lambdas must be increasing; write {sorted(lambdas)}")
        return lambdas

    @model_validator(mode="after")
    def _valid_params(self) -> "MergerSpec":
        ww.MERGERS[self.name].resolve(self.params)  # the registry's signature-derived checks, at spec time
        return self

    def resolved_params(self) -> dict[str, Any]:
        """The hyper-parameters with every default filled in (writing a default or omitting it is the
        same merger); an omitted ``seed`` of a random merger stays open: each trial supplies its own."""
        record = ww.MERGERS[self.name]
        resolved = record.resolve(self.params)
        if "seed" in record.defaults and "seed" not in self.params:
            resolved["seed"] = "<trial seed>"
        return resolved

    def grid(self) -> list[float]:
        return list(self.lambdas) if self.lambdas is not None else ww.default_lambdas(self.name)


class ResourcesSpec(_Strict):
    """Ray resources: per expert fine-tune (Ray Train) and per merge-and-evaluate trial (Ray Tune)."""

    expert_workers: int = Field(1, ge=1)
    cpus_per_expert_worker: float = Field(1, gt=0)
    gpus_per_expert_worker: float = Field(0, ge=0)
    experts_per_fit: int = Field(1, ge=1)
    """Experts fine-tuned one after another in one Ray Train run. Every run starts its own controller
    and worker group, new processes that import torch: for small models that start-up outweighs
    the fine-tune, and a pack pays it once. Each expert is still stored as soon as it is done, and a
    failed pack's unfinished experts are retried one per run. 1 (the default) suits real model sizes."""
    prepare_cpus: float = Field(2, gt=0)
    trial_cpus: float = Field(1, gt=0)
    trial_gpus: float = Field(0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    trial_timeout_s: float | None = Field(None, gt=0)
    """Wall-clock limit of one trial (merge + evaluation); beyond it the trial becomes an error row."""
    trial_memory_gb: float | None = Field(None, gt=0)
    """Limit on a trial worker's private resident memory (θ0, heads, merge temporaries; the shared
    bank and memory-mapped eval tensors do not count); beyond it the trial becomes an error row."""
    bank_route: Literal["auto", "object_store", "file"] = "auto"
    """How a bank reaches the trials: ``object_store`` (``ray.put`` once, read zero-copy), ``file``
    (a memory-mapped file in each node's cache, merged out of core), or ``auto``: the file when the
    bank is larger than ``bank_store_fraction`` of the (smallest node's) object store."""
    bank_store_fraction: float = Field(0.25, gt=0, le=1)


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    plugins: list[str] = Field(default_factory=list)
    """Modules imported before the rest of the spec is validated and in every trial worker, e.g.
    to register your own merger with ``@ww.merger``. Declared before ``mergers`` on purpose:
    pydantic validates fields in order, so plugin mergers exist when merger names are checked."""
    models: list[ModelSpec] = Field(min_length=1)
    setups: list[SetupSpec] = Field(min_length=1)
    mergers: list[MergerSpec] = Field(min_length=1)
    poolings: list[str] = Field(default_factory=lambda: [NO_POOLING, "avg"], min_length=1)
    variants: list[Literal["collaborative", "plain"]] = Field(default_factory=lambda: ["collaborative"], min_length=1)
    fixed_lambda: float = Field(1.0, gt=0, allow_inf_nan=False)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    resources: ResourcesSpec = ResourcesSpec()

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, plugins: list[str]) -> list[str]:
        import_plugins(plugins)
        return _unique(plugins, "plugins")

    @field_validator("poolings")
    @classmethod
    def _known_poolings(cls, poolings: list[str]) -> list[str]:
        valid = [NO_POOLING, ORACLE, *ww.POOLINGS, *ww.MERGERS]
        for pooling in poolings:
            if pooling not in valid:
                raise ValueError(f"unknown pooling {pooling!r}{_suggest(pooling, valid)}; known: {valid}")
        return _unique(poolings, "poolings")

    @field_validator("seeds", "variants")
    @classmethod
    def _no_duplicates(cls, values: list, info) -> list:
        return _unique(values, info.field_name)

    @model_validator(mode="after")
    def _unique_names(self) -> "Spec":
        _unique([(m.name, m.pretrained) for m in self.models], "models")
        _unique([s.name for s in self.setups], "setup names")
        _unique([(m.name, repr(sorted(m.resolved_params().items()))) for m in self.mergers], "mergers")
        return self


_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def import_plugins(names: list[str]) -> None:
    """Import the spec's plugin modules (by module name only: a spec never names a file to run)."""
    for name in names:
        if not _MODULE.match(name):
            raise ValueError(
                f"plugin {name!r} is not a module name; write a dotted module name such as "
                "my_lab.mergers (installed or on PYTHONPATH), not a path"
            )
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ValueError(
                f"cannot import plugin {name!r} ({type(exc).__name__}: {exc}); install it or put it "
                "on PYTHONPATH (every Ray worker imports it too)"
            ) from None


def _unique(values: list, what: str) -> list:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"duplicated {what}: {seen}; list each value once")
    return values


def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: pydantic error types whose message is improved by showing the value that was given.
_TYPE_ERRORS = {"literal_error", "greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    errors = exc.errors()
    # a misspelt required key also makes the right key "missing": say it once, as the misspelling
    misspelt = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1]), list(parent.model_fields) if parent else [], n=1)
            misspelt.update((*err["loc"][:-1], c) for c in close)
    for err in errors:
        if err["type"] == "missing" and tuple(err["loc"]) in misspelt:
            continue
        where = ".".join(str(p) for p in err["loc"]) or "<top>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required; add it"
        elif err["type"] == "too_short" and not err.get("input"):
            msg = "is empty; list at least one value"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{err['input']!r} has characters other than letters, digits, '.', '_' and '-'; use only those"
        elif err["type"] in _TYPE_ERRORS or err["type"].endswith(("_type", "_parsing")):
            got = repr(err.get("input"))
            msg += f", got {got if len(got) <= 60 else got[:57] + '...'}"
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            valid = list(parent.model_fields) if parent else []
            msg = f"unknown key {err['loc'][-1]!r}{_suggest(str(err['loc'][-1]), valid)}; valid keys: {valid}"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at a location in the spec tree (to list its valid keys)."""
    model: type[BaseModel] = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            inner = getattr(candidate, "__args__", (candidate,))
            classes = [c for c in (candidate, *inner) if isinstance(c, type) and issubclass(c, BaseModel)]
            if classes:
                model = classes[0]
                break
        else:
            return None
    return model


def parse_spec(data: Any, source: str = "<spec>") -> Spec:
    if not isinstance(data, dict):
        got = "the file is empty" if data is None else f"got a {type(data).__name__}"
        raise SpecError(f"{source}: a spec is a YAML mapping with keys {list(Spec.model_fields)}; {got}")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, source)) from None


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} not found; pass a YAML spec such as benchmark/spec/presets/quickstart.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from None
    return parse_spec(data, str(path))


#: The shipped preset specs (the quickstart, the toy and paper experiments).
PRESETS = Path(__file__).parent / "presets"


def quickstart_spec_path() -> Path:
    return PRESETS / "quickstart.yaml"
