"""``run_bench.py run SPEC``: the data flow of docs/DESIGN.md, stage by stage.

spec → plan → θ0 / tensors / heads (Ray task) → experts (Ray Train) → references → banks
(streamed expert by expert; ``ray.put`` once, or a memory-mapped file in each node's cache) → grid
(Ray Tune) → Parquet → leaderboard. Every stage skips what the storage
root already holds, so running the same spec twice does no work twice.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console
from rich.table import Table

from benchmark.console import StageProgress
from benchmark.experts import store as expert_store
from benchmark.results import store as results
from benchmark.results.preflight import (
    BankPlan,
    check_cache_space,
    check_free_space,
    check_memory,
    estimate_disk,
    free_bytes,
    human_bytes,
    plan_banks,
    ray_nodes_memory,
)
from benchmark.results.storage import StorageRoot, require_shared_root
from benchmark.spec.plan import Plan, Trial, build_plan
from benchmark.spec.schema import ModelSpec, SetupSpec, Spec


@dataclass
class RunSummary:
    plan: Plan
    experts_trained: int = 0
    experts_failed: list[str] = field(default_factory=list)
    trials_run: int = 0
    trials_skipped: int = 0
    trials_blocked: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    #: per-stage detail for callers that measure a run (``run_bench.py rehearse``)
    prepared: dict = field(default_factory=dict)
    expert_outcomes: list = field(default_factory=list)
    trial_metrics: list[dict] = field(default_factory=list)


def init_ray() -> None:
    """Join the running cluster if there is one (``RAY_ADDRESS`` or Ray's address file), else start a
    local Ray; reuse a running session. Joining forwards where data and weights live (ray_env.py)."""
    import ray

    from benchmark.console import ray_output_captured
    from benchmark.ray_env import cluster_address, runtime_env_for

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = cluster_address()
    if address is None:
        # A Ray started here lives on this one machine: no node of it can be preempted on its own, and
        # nothing scrapes Ray Train's metrics without the dashboard. Both would add an actor (a
        # process importing Ray Train) or callbacks to every expert's run. Workers inherit this
        # environment; a cluster's nodes keep their own settings.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level="WARNING",
        configure_logging=not ray_output_captured(),  # else Ray's logs go to the run's log file
        log_to_driver=os.environ.get("WW_RAY_LOGS") == "1",
        runtime_env=runtime_env_for(address),
    )


class MissingInputsError(FileNotFoundError):
    """Several inputs (weights, datasets) are missing: all of them, each with how to get it."""

    def __init__(self, problems: list[Exception]):
        self.problems = problems
        listed = "\n".join("- " + str(p).replace("\n", "\n    ") for p in problems)
        super().__init__(f"{len(problems)} inputs are missing; fetch them, then run again:\n{listed}")


def missing_inputs(spec: Spec) -> list[Exception]:
    """Every missing or unreadable input of ``spec``: each model's weights, each dataset once."""
    from benchmark.data import DatasetMalformedError, DatasetMissingError
    from benchmark.data import loaders as data
    from benchmark.model.pretrained import MissingWeightsError, check_weights_available

    problems, seen = [], set()
    for model in spec.models:
        try:
            check_weights_available(model)
        except (MissingWeightsError, ValueError) as exc:
            problems.append(exc)
    for setup in spec.setups:
        for task in dict.fromkeys([*setup.expert_tasks(), *(e.task for e in setup.evaluations())]):
            try:
                data.check_task_data(task)
            except (DatasetMissingError, DatasetMalformedError) as exc:
                if str(exc) not in seen:  # the tasks of one dataset (splits, domains) share its files
                    seen.add(str(exc))
                    problems.append(exc)
    return problems


def check_inputs(spec: Spec) -> None:
    """Fail before any work when weights or data are missing, naming all of them and how to get each."""
    problems = missing_inputs(spec)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise MissingInputsError(problems)


def _get_input_checked(ref):
    """``ray.get`` of a stage that reads the user's inputs: their errors come back as themselves.

    A dataset with unreadable images or a broken checkpoint is found by the worker that reads it;
    re-raised as the original exception it reaches the CLI as one line (exit code 2) instead of a
    remote traceback.
    """
    import ray

    from benchmark.data import DatasetMalformedError, DatasetMissingError
    from benchmark.model.pretrained import ForeignCheckpointError, MissingWeightsError

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (DatasetMalformedError, DatasetMissingError, ForeignCheckpointError, MissingWeightsError)):
            raise cause from None
        raise


def _wait_prepared(refs: dict, spec: Spec, storage: StorageRoot, console: Console) -> dict:
    """The prepare tasks' results. Each task streams progress lines (tensors cached, heads computed)
    before its result; a toy θ0 pre-training also shows its steps, which the task records in the root."""
    import threading

    from benchmark.model.prepare import pretrain_progress_path
    from benchmark.model.pretrained import _toy_checkpoint

    prepared: dict = {}

    def consume(log) -> None:
        for key, stream in refs.items():
            for ref in stream:
                kind, value = _get_input_checked(ref)
                if kind == "progress":
                    log(str(value))
                else:
                    prepared[key] = value

    from benchmark.model.pretrained import base_key
    from benchmark.toy.shipped import shipped_for

    toys = [
        m
        for m in spec.models
        if m.is_toy and not _toy_checkpoint(m, storage).exists() and shipped_for(base_key(m)) is None
    ]  # the shipped θ0 is copied, not pre-trained
    if not toys:
        consume(lambda line: console.print(f"  {line}", highlight=False, markup=False))
        return prepared
    with StageProgress(console, "pre-training θ0", sum(m.pretrain.steps for m in toys), "steps") as bar:
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                done, loss = 0, None
                for model in toys:
                    try:
                        last = json.loads(pretrain_progress_path(storage, model).read_text())
                    except (OSError, ValueError):
                        continue
                    done, loss = done + last["step"], last["loss"]
                bar.update(done, "" if loss is None else f"loss {loss:.2f}")

        poller = threading.Thread(target=poll, name="pretrain-progress", daemon=True)
        poller.start()
        try:
            consume(bar.log)
        finally:
            stop.set()
            poller.join()
    return prepared


def _bank_built(storage: StorageRoot, key: str) -> bool:
    from benchmark.trials.banks import bank_file_path

    return bank_file_path(storage, key).exists()


def print_plan(
    plan: Plan, storage: StorageRoot, console: Console, banks: list[BankPlan] | None = None
) -> tuple[list, list[Trial]]:
    """Print what the run will do (experts, banks and the route each takes, trials); return what is to do."""
    from benchmark.trials.banks import object_store_capacity

    status = results.trial_status(storage)
    experts_todo = [e for e in plan.experts if not expert_store.is_done(e, storage)]
    trials_todo = [t for t in plan.trials if status.get(t.key) != "ok"]
    table = Table(title=f"Plan for spec {plan.spec.name!r} (hash {plan.spec_hash}) → {storage.root}")
    for col in ("stage", "what", "total", "cached/done", "to run"):
        table.add_column(col, justify="right" if col in ("total", "cached/done", "to run") else "left")
    per_fit = plan.spec.resources.experts_per_fit
    for model in plan.spec.models:
        for setup in plan.spec.setups:
            jobs = [e for e in plan.experts if e.model["name"] == model.name and e.setup == setup.name]
            todo = [e for e in jobs if e in experts_todo]
            table.add_row(
                "experts (Ray Train)",
                f"{model.name}/{model.pretrained} · {setup.name}: "
                f"{', '.join(setup.expert_tasks())} × seed(s) {', '.join(map(str, plan.spec.seeds))}"
                + (f" · up to {per_fit} per run" if per_fit > 1 else ""),
                str(len(jobs)),
                str(len(jobs) - len(todo)),
                str(len(todo)),
            )
    store_bytes, store_source = object_store_capacity()
    if banks is None:
        banks = plan_banks(plan, trials_todo, store_bytes)
    for bank in banks:
        built = bank.route == "file" and _bank_built(storage, bank.key)
        table.add_row(
            f"bank → {bank.route.replace('_', ' ')}",
            f"{bank.label}: {bank.n_tasks} task vector(s), {human_bytes(bank.bytes)}",
            "1",
            str(int(built)),
            str(int(not built)),
        )
    by_merger = defaultdict(list)
    for t in plan.trials:
        by_merger[t.merger].append(t)
    for merger, trials in by_merger.items():
        todo = [t for t in trials if t in trials_todo]
        poolings = sorted({t.pooling for t in trials})
        table.add_row(
            "trials (Ray Tune)",
            f"{merger} × pooling {', '.join(poolings)}",
            str(len(trials)),
            str(len(trials) - len(todo)),
            str(len(todo)),
        )
    console.print(table)
    res = plan.spec.resources
    if banks:
        store = "unknown" if store_bytes is None else human_bytes(store_bytes)
        rule = (
            f"file above {res.bank_store_fraction:.0%} of the object store"
            + ("" if store_bytes is None else f" ({human_bytes(int(res.bank_store_fraction * store_bytes))})")
            if res.bank_route == "auto"
            else f"{res.bank_route.replace('_', ' ')} (forced)"
        )
        console.print(f"bank route {res.bank_route}: {rule}; object store {store} ({store_source})", highlight=False)
    return experts_todo, trials_todo


def run_spec(
    spec: Spec,
    storage: StorageRoot,
    *,
    dry_run: bool = False,
    console: Console | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run the spec; ``on_stage(name)`` is called as each timed stage ends (a caller's meter)."""
    console = console or Console()
    stage_done = on_stage or (lambda name: None)
    plan = build_plan(spec)
    if not dry_run:
        check_inputs(spec)
    summary = RunSummary(plan=plan)
    experts_todo, trials_todo = print_plan(plan, storage, console)
    summary.trials_skipped = len(plan.trials) - len(trials_todo)
    needed = {k for t in trials_todo for k in t.expert_keys}
    for job in plan.experts:  # stored experts the run will merge: a truncated one is refused now, not after hours
        if job.key in needed and job not in experts_todo:
            expert_store.check_readable(job, storage)
    if dry_run and (problems := missing_inputs(spec)):  # after the plan: every input it lacks
        console.print(
            "[bold]--dry-run[/]: nothing was trained or evaluated (no disk estimate until the inputs are in place)."
        )
        raise problems[0] if len(problems) == 1 else MissingInputsError(problems)
    from benchmark.trials.banks import object_store_capacity

    banks = plan_banks(plan, trials_todo, object_store_capacity()[0])
    bank_files = sum(b.bytes for b in banks if b.route == "file" and not _bank_built(storage, b.key))
    disk = estimate_disk(plan, experts_todo, trials_todo, bank_files=bank_files if storage.cache_dir is None else 0)
    if dry_run:
        free = free_bytes(storage)
        short = free is not None and free < disk.total
        console.print(
            f"disk: about {human_bytes(disk.total)} to write ({disk.describe()})"
            + ("" if free is None else f"; {human_bytes(free)} free")
            + (" [red]— not enough[/]" if short else ""),
            highlight=False,
        )
        console.print("[bold]--dry-run[/]: nothing was trained or evaluated.")
        return summary
    storage.ensure()
    check_free_space(storage, disk)  # a full disk fails now, not halfway through the fine-tunes
    check_cache_space(storage, bank_files)
    clock = time.perf_counter()
    init_ray()
    summary.seconds["ray_init"] = time.perf_counter() - clock
    stage_done("ray_init")
    require_shared_root(storage)  # every node must see a local root, or nothing can be resumed
    # the object store's real size is known now: the routes are final, and must fit in memory
    from benchmark.trials.banks import available_memory, object_store_capacity

    planned = {b.key: b.route for b in banks}
    store_bytes = object_store_capacity()[0]
    banks = plan_banks(plan, trials_todo, store_bytes)
    routes = {b.key: b.route for b in banks}
    for bank in banks:
        if planned.get(bank.key) != bank.route:
            console.print(
                f"bank {bank.label}: {bank.route.replace('_', ' ')} route after all (Ray's object store "
                f"holds {human_bytes(store_bytes or 0)})",
                highlight=False,
            )
    res = spec.resources
    check_memory(
        banks,
        res,
        len(trials_todo),
        store_bytes=store_bytes,
        driver_available=available_memory(),
        nodes=ray_nodes_memory(),
    )

    import ray

    from benchmark.experts.training import fit_experts
    from benchmark.model.prepare import prepare_remote, zeroshot_bits, zeroshot_lookup
    from benchmark.model.pretrained import load_base_model
    from benchmark.trials.banks import build_bank, build_bank_file
    from benchmark.trials.grid import run_grid
    from benchmark.trials.merge_eval import reference_rows

    needed_experts = {k for t in trials_todo for k in t.expert_keys} | {e.key for e in experts_todo}
    if not needed_experts:
        console.print("every trial is already in the results; nothing to run")
        return summary

    # θ0, cached tensors, heads, zero-shot accuracy: one task per model
    clock = time.perf_counter()
    prepare = prepare_remote(res.prepare_cpus, res.trial_gpus)
    prepared_refs = {}
    for model in spec.models:
        tasks = [
            (task, setup.data.model_dump(mode="json"), task in setup.expert_tasks())
            for setup in spec.setups
            for task in dict.fromkeys([*setup.expert_tasks(), *(e.task for e in setup.evaluations())])
        ]
        prepared_refs[model.name, model.pretrained] = prepare.remote(
            model.model_dump(mode="json"), tasks, storage.uri()
        )
    prepared = _wait_prepared(prepared_refs, spec, storage, console)
    summary.seconds["prepare"] = time.perf_counter() - clock
    summary.prepared = prepared
    stage_done("prepare")
    console.print(f"θ0, tensors and heads ready ({summary.seconds['prepare']:.0f} s)")

    # experts (Ray Train), concurrently
    clock = time.perf_counter()
    expert_jobs = [e for e in plan.experts if e.key in needed_experts]
    with StageProgress(
        console, "experts", sum(not expert_store.is_done(e, storage) for e in expert_jobs), "fine-tuned"
    ) as bar:
        outcomes = fit_experts(
            expert_jobs,
            storage,
            res,
            log=bar.log,
            on_done=lambda o: bar.advance(
                f"{o.job.task} {o.detail.get('test_accuracy', float('nan')):.3f}" if o.ok else f"{o.job.task} failed"
            ),
        )
    summary.experts_trained = sum(o.ok for o in outcomes)
    summary.experts_failed = [f"{o.job.task} (seed {o.job.seed}): {o.detail}" for o in outcomes if not o.ok]
    summary.seconds["experts"] = time.perf_counter() - clock
    summary.expert_outcomes = outcomes
    stage_done("experts")

    # references, banks (ray.put once each, or a file in the node's cache), grid
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
            refs, zs_bits = {}, {}
            for evaluation in setup.evaluations():
                zs = zeroshot_lookup(prepared[model.name, model.pretrained], model, evaluation.task, setup.data)
                refs[evaluation.task] = {
                    "zeroshot_accuracy": zs["accuracy"],
                    "n_examples": zs["n_examples"],
                    "expert_accuracy": expert_acc.get(evaluation.task),
                }
                zs_bits[evaluation.task] = zeroshot_bits(zs)
            # streamed expert by expert; refuses bad experts: nothing written yet
            if routes.get(trial.bank_key, "object_store") == "file":
                bank = build_bank_file(jobs, base_models[trial.base_key], storage, trial.bank_key, log=console.print)
            else:
                bank = build_bank(jobs, base_models[trial.base_key], storage)
            references[trial.bank_key] = refs
            for kind, rows in reference_rows(trial, refs, expert_acc, zs_bits).items():
                results.write_part(storage, rows, f"{kind}-{trial.bank_key}")
            bank_refs[trial.bank_key] = ray.put(bank)
            del bank  # the object store holds it now: the driver's copy goes
        runnable.append(trial)
    summary.seconds["banks"] = time.perf_counter() - clock
    stage_done("banks")
    if summary.trials_blocked:
        console.print(
            f"[red]{summary.trials_blocked} trial(s) skipped: their experts failed[/] "
            + "; ".join(summary.experts_failed)
        )

    clock = time.perf_counter()
    with StageProgress(console, "trials", len(runnable), "merged and evaluated") as bar:
        errors_seen = []

        def trial_done(metrics: dict) -> None:
            errors_seen.extend([1] if metrics.get("status") != "ok" else [])
            bar.advance(f"{len(errors_seen)} error(s)" if errors_seen else "")

        metrics = run_grid(
            runnable,
            bank_refs,
            references,
            storage,
            res,
            name=f"{spec.name}-{plan.spec_hash}",
            plugins=spec.plugins,
            on_trial_done=trial_done,
        )
    summary.trials_run = len(metrics)
    summary.seconds["grid"] = time.perf_counter() - clock
    summary.trial_metrics = metrics
    stage_done("grid")
    errors = [m for m in metrics if m.get("status") != "ok"]
    console.print(
        f"grid: {len(metrics)} trial(s) in {summary.seconds['grid']:.0f} s"
        + (f", [red]{len(errors)} error(s)[/]" if errors else "")
    )
    return summary
