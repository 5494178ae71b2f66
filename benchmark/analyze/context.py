"""What every analysis reads: a spec's experts in the storage root, θ0, heads and test tensors.

Analyses run after `run_bench.py run` on the driver, without Ray: they read the experts the run
left (safetensors + manifests), never train one. A missing expert is an error that says to run the
spec first, since an analysis of the experts that happen to exist would silently describe another
experiment.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console

import ww
from benchmark.experts import store as expert_store
from benchmark.results.storage import StorageRoot, safe_name
from benchmark.spec.plan import ExpertJob, expert_chain
from benchmark.spec.schema import ModelSpec, SetupSpec, Spec
from benchmark.trials.banks import build_bank
from benchmark.trials.merge_eval import WarmAssets


@dataclass(frozen=True)
class BankRef:
    """One (model, setup, seed): its experts in chain order, as the grid's bank has them."""

    model: ModelSpec
    setup: SetupSpec
    seed: int
    jobs: tuple[ExpertJob, ...]

    @property
    def tasks(self) -> list[str]:
        return [job.task for job in self.jobs]

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(job.key for job in self.jobs)

    def identity(self, run_name: str) -> dict:
        """The columns every analysis row starts with (the results dataset's axes, where they apply)."""
        return {
            "run_name": run_name,
            "model": self.model.name,
            "pretrained": self.jobs[0].pretrained_label,
            "setup": self.setup.name,
            "setup_kind": self.setup.kind,
            "finetune_mode": self.setup.finetune.mode,
            "n_tasks": len(self.jobs),
            "seed": self.seed,
        }

    @property
    def label(self) -> str:
        """A file-name-safe label, e.g. ``ww-toy-vit-toy-mtl-seed0``."""
        return safe_name(f"{self.model.name}-{self.setup.name}-seed{self.seed}")


def bank_refs(spec: Spec) -> list[BankRef]:
    """Every (model, setup, seed) of the spec with its expert jobs (the plan's keys and paths)."""
    return [
        BankRef(model, setup, seed, tuple(expert_chain(model, setup, seed)))
        for model, setup, seed in itertools.product(spec.models, spec.setups, spec.seeds)
    ]


def check_experts(spec: Spec, storage: StorageRoot, spec_path: str | None = None) -> None:
    """FileNotFoundError naming what is missing unless every expert of the spec is in the root."""
    jobs = list({job.key: job for ref in bank_refs(spec) for job in ref.jobs}.values())
    missing = [job for job in jobs if not expert_store.is_done(job, storage)]
    if missing:
        first = missing[0]
        raise FileNotFoundError(
            f"{len(missing)} of {len(jobs)} experts of spec {spec.name!r} are not in {storage.root} "
            f"(first: {first.task} of setup {first.setup}, seed {first.seed}); analyze reads finished experts "
            f"and trains nothing: run the spec first (python run_bench.py run {spec_path or 'SPEC'} "
            f"--root {storage.root})"
        )


def twin_jobs(ref: BankRef, storage: StorageRoot) -> tuple[ExpertJob, ...] | None:
    """The same CIL setup fine-tuned in the other mode, if the root holds all its experts.

    Expert keys do not depend on the setup's name, so the twin is found whichever spec (and setup
    name) trained it: the manifests under ``experts/<model>/<pretrained>/*/<seed>/`` are matched
    by key. Returns the jobs pointed at the folder that holds them, or None.
    """
    if ref.setup.kind != "cil":
        return None
    other = "independent" if ref.setup.finetune.mode == "sequential" else "sequential"
    twin = ref.setup.model_copy(update={"finetune": ref.setup.finetune.model_copy(update={"mode": other})})
    jobs = expert_chain(ref.model, twin, ref.seed)
    wanted = {job.key: job for job in jobs}
    folder = ref.jobs[0].path(storage).parent.parent.parent  # experts/<model>/<pretrained>
    found: dict[str, ExpertJob] = {}
    for manifest in _manifests(folder, ref.seed):
        try:
            key = json.loads(manifest.read_text()).get("key")
        except (OSError, json.JSONDecodeError):
            continue
        if key in wanted and key not in found:
            located = replace(wanted[key], setup=manifest.parent.parent.name)
            if expert_store.is_done(located, storage):
                found[key] = located
    if len(found) != len(jobs):
        return None
    return tuple(found[job.key] for job in jobs)


def _manifests(folder, seed: int) -> list:
    """``<folder>/<setup>/<seed>/*.manifest.json``, on a local disk or (a URI root) through pyarrow."""
    if isinstance(folder, Path):
        return sorted(folder.glob(f"*/{seed}/*.manifest.json"))
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(folder.path, recursive=True, allow_not_found=True)
    found = []
    for info in folder.fs.get_file_info(selector):
        parts = info.path[len(folder.path) :].strip("/").split("/")
        if len(parts) == 3 and parts[1] == str(seed) and parts[2].endswith(".manifest.json"):
            found.append(folder / parts[0] / parts[1] / parts[2])
    return sorted(found, key=str)


@dataclass
class AnalysisContext:
    """The spec, the root, where outputs go, and loaded assets shared by the analyses of one call."""

    spec: Spec
    storage: StorageRoot
    out: Path
    console: Console
    refs: list[BankRef]
    assets: dict[tuple[str, str], WarmAssets] = field(default_factory=dict)
    banks: dict[tuple[str, ...], ww.TaskVectorBank] = field(default_factory=dict)

    def warm(self, model: ModelSpec) -> WarmAssets:
        """θ0 (and its cached heads and test tensors) of ``model``, loaded once per call."""
        key = (model.name, model.pretrained)
        if key not in self.assets:
            self.assets[key] = WarmAssets.load(model, self.storage)
        return self.assets[key]

    def bank(self, model: ModelSpec, jobs: tuple[ExpertJob, ...]) -> ww.TaskVectorBank:
        """τt = θt − θ0 of ``jobs`` as a flat bank (validated against θ0, as the grid's bank is)."""
        key = tuple(job.key for job in jobs)
        if key not in self.banks:
            self.banks[key] = build_bank(list(jobs), self.warm(model).theta0_visual, self.storage).to_ww()
        return self.banks[key]

    def row_label(self, ref: BankRef) -> str:
        """How a bank is named in terminal tables: short, the model only when the spec has several."""
        model = f"{ref.model.name} · " if len(self.spec.models) > 1 else ""
        return f"{model}{ref.setup.name} · seed {ref.seed}"

    def test_split(self, model: ModelSpec, task: str, setup: SetupSpec) -> tuple[torch.Tensor, torch.Tensor]:
        return self.warm(model).test_split(self.storage, task, setup.data)

    def head(self, model: ModelSpec, task: str) -> torch.Tensor:
        return self.warm(model).head(self.storage, task)
