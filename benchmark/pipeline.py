"""``run_bench.py run SPEC``: the data flow of DESIGN.md, stage by stage.

spec → plan → θ0 / tensors / heads (Ray task) → experts (Ray Train) → references → banks
(``ray.put`` once) → grid (Ray Tune) → Parquet → leaderboard. Every stage skips what the storage
root already holds, so running the same spec twice does no work twice.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from benchmark import expert_store, results
from benchmark.plan import Plan, Trial, build_plan
from benchmark.preflight import check_free_space, estimate_disk, free_bytes, human_bytes
from benchmark.specs import DataSpec, ModelSpec, SetupSpec, Spec
from benchmark.storage import StorageRoot, require_shared_root


@dataclass
class RunSummary:
    plan: Plan
    experts_trained: int = 0
    experts_failed: list[str] = field(default_factory=list)
    trials_run: int = 0
    trials_skipped: int = 0
    trials_blocked: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def init_ray() -> None:
    """Join ``RAY_ADDRESS`` if set (a cluster), else start a local Ray; reuse a running session."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = os.environ.get("RAY_ADDRESS")
    # on a cluster, workers do not inherit the driver's environment: forward where data and weights live
    forwarded = {k: os.environ[k] for k in ("WW_DATA_ROOT", "WW_CACHE_DIR", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE")
                 if k in os.environ}
    ray.init(address=address, include_dashboard=False, logging_level="WARNING", configure_logging=True,
             log_to_driver=os.environ.get("WW_RAY_LOGS") == "1",
             runtime_env={"env_vars": forwarded} if address and forwarded else None)


def check_inputs(spec: Spec) -> None:
    """Fail before any work when weights or data are missing (the message says how to get them)."""
    from benchmark import data
    from benchmark.models import check_weights_available

    for model in spec.models:
        check_weights_available(model)
    for setup in spec.setups:
        for task in dict.fromkeys([*setup.expert_tasks(), *(e.task for e in setup.evaluations())]):
            data.check_task_data(task)


def _get_input_checked(ref):
    """``ray.get`` of a stage that reads the user's inputs: their errors come back as themselves.

    A dataset with unreadable images or a broken checkpoint is found by the worker that reads it;
    re-raised as the original exception it reaches the CLI as one line (exit code 2) instead of a
    remote traceback.
    """
    import ray

    from benchmark.datasets import DatasetMalformedError, DatasetMissingError
    from benchmark.models import ForeignCheckpointError, MissingWeightsError

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (DatasetMalformedError, DatasetMissingError, ForeignCheckpointError, MissingWeightsError)):
            raise cause from None
        raise


def print_plan(plan: Plan, storage: StorageRoot, console: Console) -> tuple[list, list[Trial]]:
    status = results.trial_status(storage)
    experts_todo = [e for e in plan.experts if not expert_store.is_done(e, storage)]
    trials_todo = [t for t in plan.trials if status.get(t.key) != "ok"]
    table = Table(title=f"Plan for spec {plan.spec.name!r} (hash {plan.spec_hash}) → {storage.root}")
    for col in ("stage", "what", "total", "cached/done", "to run"):
        table.add_column(col, justify="right" if col in ("total", "cached/done", "to run") else "left")
    for model in plan.spec.models:
        for setup in plan.spec.setups:
            jobs = [e for e in plan.experts if e.model["name"] == model.name and e.setup == setup.name]
            todo = [e for e in jobs if e in experts_todo]
            table.add_row("experts (Ray Train)", f"{model.name}/{model.pretrained} · {setup.name}: "
                          f"{', '.join(setup.expert_tasks())} × seed(s) {', '.join(map(str, plan.spec.seeds))}",
                          str(len(jobs)), str(len(jobs) - len(todo)), str(len(todo)))
    by_merger = defaultdict(list)
    for t in plan.trials:
        by_merger[t.merger].append(t)
    for merger, trials in by_merger.items():
        todo = [t for t in trials if t in trials_todo]
        poolings = sorted({t.pooling for t in trials})
        table.add_row("trials (Ray Tune)", f"{merger} × pooling {', '.join(poolings)}", str(len(trials)),
                      str(len(trials) - len(todo)), str(len(todo)))
    console.print(table)
    return experts_todo, trials_todo


def run_spec(spec: Spec, storage: StorageRoot, *, dry_run: bool = False, console: Console | None = None) -> RunSummary:
    console = console or Console()
    plan = build_plan(spec)
    check_inputs(spec)
    summary = RunSummary(plan=plan)
    experts_todo, trials_todo = print_plan(plan, storage, console)
    summary.trials_skipped = len(plan.trials) - len(trials_todo)
    needed = {k for t in trials_todo for k in t.expert_keys}
    for job in plan.experts:  # stored experts the run will merge: a truncated one is refused now, not after hours
        if job.key in needed and job not in experts_todo:
            expert_store.check_readable(job, storage)
    disk = estimate_disk(plan, experts_todo, trials_todo)
    if dry_run:
        free = free_bytes(storage)
        short = free is not None and free < disk.total
        console.print(f"disk: about {human_bytes(disk.total)} to write ({disk.describe()})"
                      + ("" if free is None else f"; {human_bytes(free)} free") + (" [red]— not enough[/]" if short else ""),
                      highlight=False)
        console.print("[bold]--dry-run[/]: nothing was trained or evaluated.")
        return summary
    storage.ensure()
    check_free_space(storage, disk)  # a full disk fails now, not halfway through the fine-tunes
    clock = time.perf_counter()
    init_ray()
    summary.seconds["ray_init"] = time.perf_counter() - clock
    require_shared_root(storage)  # every node must see a local root, or nothing can be resumed

    import ray

    from benchmark.bank import build_bank
    from benchmark.grid import run_grid
    from benchmark.merge_eval import reference_rows
    from benchmark.models import load_base_model
    from benchmark.prepare import prepare_remote, zeroshot_lookup
    from benchmark.training import fit_experts

    needed_experts = {k for t in trials_todo for k in t.expert_keys} | {e.key for e in experts_todo}
    if not needed_experts:
        console.print("every trial is already in the results; nothing to run")
        return summary

    # θ0, cached tensors, heads, zero-shot accuracy: one task per model
    clock = time.perf_counter()
    res = spec.resources
    prepare = prepare_remote(res.prepare_cpus, res.trial_gpus)
    prepared_refs = {}
    for model in spec.models:
        tasks = [(task, setup.data.model_dump(mode="json"), task in setup.expert_tasks()) for setup in spec.setups
                 for task in dict.fromkeys([*setup.expert_tasks(), *(e.task for e in setup.evaluations())])]
        prepared_refs[model.name, model.pretrained] = prepare.remote(model.model_dump(mode="json"), tasks,
                                                                    storage.uri())
    with console.status("preparing θ0 (shipped, or pre-trained for another toy recipe), tensors and zero-shot heads"):
        prepared = {k: _get_input_checked(ref) for k, ref in prepared_refs.items()}
    summary.seconds["prepare"] = time.perf_counter() - clock
    console.print(f"θ0, tensors and heads ready ({summary.seconds['prepare']:.0f} s)")

    # experts (Ray Train), concurrently
    clock = time.perf_counter()
    outcomes = fit_experts([e for e in plan.experts if e.key in needed_experts], storage, res, log=console.print)
    summary.experts_trained = sum(o.ok for o in outcomes)
    summary.experts_failed = [f"{o.job.task} (seed {o.job.seed}): {o.detail}" for o in outcomes if not o.ok]
    summary.seconds["experts"] = time.perf_counter() - clock

    # references, banks (ray.put once each), grid
    clock = time.perf_counter()
    by_key = {e.key: e for e in plan.experts}
    runnable, references, bank_refs, base_models = [], {}, {}, {}
    for trial in trials_todo:
        jobs = [by_key[k] for k in trial.expert_keys]
        if not all(expert_store.is_done(j, storage) for j in jobs):
            summary.trials_blocked += 1
            continue
        if trial.bank_key not in bank_refs:
            model, setup = ModelSpec(**trial.model), SetupSpec(**trial.setup)
            if trial.base_key not in base_models:
                base_models[trial.base_key] = load_base_model(model, storage).visual_state()
            expert_acc = {j.task: expert_store.read_manifest(j, storage)["metrics"]["test_accuracy"] for j in jobs}
            refs = {}
            for evaluation in setup.evaluations():
                zs = zeroshot_lookup(prepared[model.name, model.pretrained], model, evaluation.task, setup.data)
                refs[evaluation.task] = {"zeroshot_accuracy": zs["accuracy"], "n_examples": zs["n_examples"],
                                         "expert_accuracy": expert_acc.get(evaluation.task)}
            bank = build_bank(jobs, base_models[trial.base_key], storage)  # refuses bad experts: nothing written yet
            references[trial.bank_key] = refs
            for kind, rows in reference_rows(trial, refs, expert_acc).items():
                results.write_part(storage, rows, f"{kind}-{trial.bank_key}")
            bank_refs[trial.bank_key] = ray.put(bank)
        runnable.append(trial)
    summary.seconds["banks"] = time.perf_counter() - clock
    if summary.trials_blocked:
        console.print(f"[red]{summary.trials_blocked} trial(s) skipped: their experts failed[/] "
                      + "; ".join(summary.experts_failed))

    clock = time.perf_counter()
    with console.status(f"running {len(runnable)} trial(s) on Ray Tune"):
        metrics = run_grid(runnable, bank_refs, references, storage, res, name=f"{spec.name}-{plan.spec_hash}",
                           plugins=spec.plugins)
    summary.trials_run = len(metrics)
    summary.seconds["grid"] = time.perf_counter() - clock
    errors = [m for m in metrics if m.get("status") != "ok"]
    console.print(f"grid: {len(metrics)} trial(s) in {summary.seconds['grid']:.0f} s"
                  + (f", [red]{len(errors)} error(s)[/]" if errors else ""))
    return summary
