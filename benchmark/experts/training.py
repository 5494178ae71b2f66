"""Fine-tuning experts with Ray Train: one ``TorchTrainer`` per expert, many at once.

The loop itself is :func:`benchmark.experts.finetune.finetune_image_encoder`, plain PyTorch runnable
without a cluster; this module only wraps it: workers load θ0, the cached head and the train split,
fine-tune ``model.visual`` (data-parallel across workers when an expert gets several), and rank 0
evaluates the expert on its test split and writes it to the expert store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import resource
import time
from typing import Callable

import ray

from benchmark.experts import store as expert_store
from benchmark.results.storage import StorageRoot, safe_name
from benchmark.spec.plan import ExpertJob
from benchmark.spec.schema import DataSpec, ModelSpec, ResourcesSpec
from benchmark.trials import eval_cache


def train_expert_loop(config: dict) -> None:
    """Ray Train worker entry point: fine-tunes the run's experts (a pack of one or more) in order.

    An expert already in the store is skipped, so a pack restarted by Ray Train after a failure
    goes on from the expert it was training; that expert resumes from the run's latest checkpoint
    when the checkpoint is its own (each carries its expert's key).
    """

    storage = StorageRoot.at(config["root"])
    for job_dict in config["jobs"]:
        job = ExpertJob(**job_dict)
        if not expert_store.is_done(job, storage):
            _train_one(job, storage)


def _train_one(job: ExpertJob, storage: StorageRoot) -> None:
    import ray.train
    import ray.train.torch

    from benchmark.experts.finetune import finetune_image_encoder
    from benchmark.model.head_cache import load_head
    from benchmark.model.pretrained import load_base_model
    from benchmark.trials.evaluation import evaluate

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    base = load_base_model(ModelSpec(**job.model), storage)
    if job.init_from is not None:  # sequential fine-tuning: continue from the previous split's expert
        base.model.visual.load_state_dict(expert_store.load_weights(job.init_path(storage)))
    data = DataSpec(**job.data)
    head = load_head(storage, base, job.task)
    images, labels = eval_cache.load_split(storage, job.task, "train", data, resolution=base.resolution)
    images, labels = images[rank::world], labels[rank::world]  # each worker its own shard
    device = ray.train.torch.get_device()
    model = base.model.to(device)
    if world > 1:
        model.visual = ray.train.torch.prepare_model(model.visual)
    recipe = _recipe(
        job, n_train=len(labels) * world, world=world, rank=rank, checkpoint_size=checkpoint_bytes(base.model.visual)
    )
    resume = _load_checkpoint(ray.train.get_checkpoint(), job.key)
    # checkpoint bytes over the whole fine-tune, attempts before a restart included (carried in the state)
    written = {"bytes": int((resume or {}).get(WRITTEN_KEY, 0)), "count": int((resume or {}).get(COUNT_KEY, 0))}
    metrics = finetune_image_encoder(
        model,
        head.to(device),
        images,
        labels,
        recipe,
        device=str(device),
        resume=resume,
        on_checkpoint=lambda state: _report_checkpoint({**state, JOB_KEY: job.key}, rank, written),
    )
    metrics["checkpoint_bytes"] = written["bytes"]
    metrics["checkpoints"] = written["count"]
    visual = getattr(model.visual, "module", model.visual)
    model.visual = visual
    if rank == 0:
        from benchmark.model.pretrained import check_finite_state

        # a diverged fine-tune fails here, as a failed expert, instead of poisoning every merge it enters
        check_finite_state(
            visual.state_dict(),
            what=f"fine-tuned expert {job.task} (seed {job.seed}) diverged (lower finetune.lr or use precision: fp32)",
        )
        test_images, test_labels = eval_cache.load_split(storage, job.task, "test", data, resolution=base.resolution)
        metrics["test_accuracy"] = evaluate(model.eval(), head.to(device), test_images, test_labels)["accuracy"]
        # this worker's peak resident memory (θ0, AdamW state, activations, train tensors): what a
        # node must hold per fine-tune (``run_bench.py rehearse`` reports it)
        metrics["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        expert_store.save_expert(job, storage, visual.state_dict(), metrics)
    ray.train.report({k: float(v) for k, v in metrics.items()})


#: Checkpoints per fine-tune when they are small; fewer for large models (:func:`checkpoints_per_run`).
MAX_CHECKPOINTS_PER_RUN = 4
#: Checkpoint bytes one fine-tune may write under the default cadence (each checkpoint is written whole):
#: the toy and ViT-B-32 get four, ViT-L-14 (its checkpoints are several times larger) one.
CHECKPOINT_BYTES_PER_RUN = 4 << 30
#: No default checkpoint closer than this many steps: so few steps are cheaper to redo than to save.
MIN_STEPS_BETWEEN_CHECKPOINTS = 10


def checkpoints_per_run(checkpoint_bytes: int) -> int:
    """How many checkpoints the default cadence writes for a checkpoint of this size (≥ 1)."""
    return max(1, min(MAX_CHECKPOINTS_PER_RUN, CHECKPOINT_BYTES_PER_RUN // max(1, checkpoint_bytes)))


def default_checkpoint_every(steps: int, checkpoint_bytes: int) -> int:
    """Steps between checkpoints when the spec does not say (0 = none): evenly spread, never after the
    last step (the expert itself is the result), none for runs too short to be worth resuming."""
    every = max(MIN_STEPS_BETWEEN_CHECKPOINTS, -(-steps // (checkpoints_per_run(checkpoint_bytes) + 1)))
    return every if every < steps else 0


def checkpoint_bytes(visual) -> int:
    """One checkpoint of this encoder: its weights and AdamW's two moments (what exact resuming needs)."""
    return 3 * sum(p.numel() * p.element_size() for p in visual.parameters())


def _recipe(job: ExpertJob, *, n_train: int, world: int, rank: int, checkpoint_size: int = 0):
    """The loop's recipe for this worker: steps from epochs if the spec sizes runs by epochs, the
    spec's checkpoint cadence or the size-aware default, a data-order seed per rank."""
    from benchmark.data import loaders as data
    from benchmark.experts.finetune import FinetuneRecipe, steps_for_epochs
    from benchmark.spec.schema import FinetuneSpec

    spec = FinetuneSpec(**{k: v for k, v in job.finetune.items() if k != "mode"})
    epochs = spec.epochs_for(data.parse_task(job.task).dataset)
    steps = spec.steps if epochs is None else steps_for_epochs(epochs, n_train, spec.batch_size, world)
    every = (
        spec.checkpoint_every if spec.checkpoint_every is not None else default_checkpoint_every(steps, checkpoint_size)
    )
    return FinetuneRecipe(
        steps=steps,
        batch_size=spec.batch_size,
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        warmup=spec.warmup,
        grad_clip=spec.grad_clip,
        precision=spec.precision,
        checkpoint_every=every,
        seed=job.seed + 1000 * rank,
    )


CHECKPOINT_FILE = "finetune_state.pt"
WRITTEN_KEY, COUNT_KEY = "ww_checkpoint_bytes_before", "ww_checkpoints_before"
#: the expert a checkpoint belongs to: a pack's run holds the checkpoints of several experts in turn
JOB_KEY = "ww_expert_key"


def _report_checkpoint(state: dict, rank: int, written: dict | None = None) -> None:
    """Every worker reports (a collective in Ray Train); rank 0 attaches the training state.

    ``written`` accumulates the bytes and number of checkpoints rank 0 wrote (the expert's manifest
    records them); the totals so far travel inside each checkpoint, so a resumed run keeps counting.
    """
    import tempfile
    from pathlib import Path

    import ray.train
    import torch

    metrics = {"step": float(state["step"]), "loss": float(state["losses"][-1])}
    if rank != 0:
        ray.train.report(metrics)
        return
    written = written if written is not None else {"bytes": 0, "count": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT_FILE
        torch.save({**state, WRITTEN_KEY: written["bytes"], COUNT_KEY: written["count"]}, path)
        written["bytes"] += path.stat().st_size
        written["count"] += 1
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _load_checkpoint(checkpoint, job_key: str | None = None) -> dict | None:
    """The training state of the run's latest checkpoint, if Ray Train is resuming one and the
    checkpoint is ``job_key``'s (one without a key predates packs: its run had one expert)."""
    if checkpoint is None:
        return None
    from pathlib import Path

    import torch

    with checkpoint.as_directory() as directory:
        path = Path(directory) / CHECKPOINT_FILE
        state = torch.load(path, map_location="cpu", weights_only=True)
        if job_key is not None and state.get(JOB_KEY, job_key) != job_key:
            return None  # the previous expert of the pack: this one starts from its beginning
        # the totals it carries were taken before it was written: count the checkpoint itself too
        state[WRITTEN_KEY] = int(state.get(WRITTEN_KEY, 0)) + path.stat().st_size
        state[COUNT_KEY] = int(state.get(COUNT_KEY, 0)) + 1
        return state


def run_name(jobs: list[dict]) -> str:
    """The Ray Train run of a pack: stable for the same experts, so a restarted pack resumes."""
    if len(jobs) == 1:
        return f"expert-{safe_name(jobs[0]['task'])}-{jobs[0]['key']}"
    digest = hashlib.sha256("/".join(j["key"] for j in jobs).encode()).hexdigest()[:16]
    return f"experts-{len(jobs)}-{safe_name(jobs[0]['task'])}-{digest}"


@ray.remote(num_cpus=0)
def _fit_pack(jobs: list[dict], root: str, resources: dict) -> list[dict]:
    """Drive one TorchTrainer for a pack of experts from a zero-CPU task, so several fits run concurrently."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    res = ResourcesSpec(**resources)
    storage = StorageRoot.at(root)
    trainer_name = run_name(jobs)
    trainer = TorchTrainer(
        train_expert_loop,
        train_loop_config={"jobs": jobs, "root": root},
        scaling_config=ScalingConfig(
            num_workers=res.expert_workers,
            use_gpu=res.gpus_per_expert_worker > 0,
            resources_per_worker={"CPU": res.cpus_per_expert_worker, "GPU": res.gpus_per_expert_worker},
        ),
        run_config=RunConfig(
            name=trainer_name,
            storage_path=str(storage.runs / "experts"),
            failure_config=FailureConfig(max_failures=1),
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # only the latest is ever resumed
        ),
    )
    start = time.perf_counter()
    trainer.fit()
    details = []
    for job in jobs:
        manifest = expert_store.read_manifest(ExpertJob(**job), storage)
        if manifest is None:
            raise RuntimeError(f"expert {job['task']} finished but wrote no manifest")
        details.append({"task": job["task"], "seconds": time.perf_counter() - start, **manifest["metrics"]})
    if not any(job["finetune"].get("keep_checkpoints") for job in jobs):
        delete_checkpoints(storage, trainer_name)
    return details


def delete_checkpoints(storage: StorageRoot, run_name: str) -> int:
    """Delete a finished expert's Ray Train run folder, checkpoints included (its safetensors are the result).

    Checkpoints hold the encoder and AdamW's moments, three times the expert, and only served
    resuming this run. The whole folder goes, not only the checkpoints: its snapshot would otherwise
    point a later re-training of the same expert (after its files were deleted) at checkpoints that
    no longer exist. Returns how many checkpoint folders it held.
    """
    import pyarrow.fs as pafs

    from benchmark.results.storage import filesystem_path

    fs, base = filesystem_path(storage.runs / "experts" / run_name)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
    count = sum(info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_") for info in infos)
    if infos:
        fs.delete_dir(base)
    return count


def fits_in_flight(cluster: dict, resources: ResourcesSpec) -> int:
    """How many experts' fits to have in flight on a cluster with ``cluster`` total resources.

    As many as its CPUs and GPUs can train at once, plus one waiting (an autoscaler adds nodes for
    the waiting one's demand; the count grows with the cluster). Launching every expert at once
    instead would start one driving process and one Ray Train controller per expert, each holding
    the torch and Ray Train imports while it waits: with tens of experts on one node that is more
    memory than the fine-tunes themselves.
    """
    fit = []
    for name, per_worker in (("CPU", resources.cpus_per_expert_worker), ("GPU", resources.gpus_per_expert_worker)):
        if per_worker > 0:
            fit.append(int(cluster.get(name, 0) // per_worker) // max(1, resources.expert_workers))
    return max(1, min(fit, default=1)) + 1


@dataclasses.dataclass
class ExpertOutcome:
    job: ExpertJob
    ok: bool
    detail: dict | str


#: How often the driver looks in the store for the experts a running pack has finished (progress only).
PROGRESS_POLL_S = 2.0


def make_packs(jobs: list[ExpertJob], per_pack: int) -> list[list[ExpertJob]]:
    """Group experts into runs of up to ``per_pack``, in order: independent experts with each other,
    a sequential chain's splits with their own chain (a later pack of a chain waits for the earlier)."""
    lanes: dict[str, list[ExpertJob]] = {}  # chain root (or "" for independent experts) -> jobs in order
    root_of: dict[str, str] = {}
    dependents = {j.init_from for j in jobs if j.init_from is not None}
    for job in jobs:
        if job.init_from is not None:
            root = root_of.get(job.init_from, job.init_from)
        else:
            root = job.key if job.key in dependents else ""
        root_of[job.key] = root
        lanes.setdefault(root, []).append(job)
    return [lane[i : i + per_pack] for lane in lanes.values() for i in range(0, len(lane), per_pack)]


def fit_experts(
    jobs: list[ExpertJob],
    storage: StorageRoot,
    resources: ResourcesSpec,
    log: Callable[[str], None] = print,
    on_done: Callable[[ExpertOutcome], None] | None = None,
) -> list[ExpertOutcome]:
    """Fine-tune every job not already in the store; keep the ones that succeed.

    Experts go to Ray Train in packs of ``resources.experts_per_fit`` (one run each; see
    :func:`make_packs`). Packs start as the cluster can take them (``fits_in_flight``); a pack whose
    first expert continues a sequential chain starts when its predecessor is in the store, and a
    chain whose link fails stops there (its later splits are reported as blocked). When a pack of
    several fails, the experts it finished are kept and the others are retried one per run, so one
    expert's failure is its own.
    """
    todo = [j for j in jobs if not expert_store.is_done(j, storage)]
    if not todo:
        return []
    log(f"fine-tuning {len(todo)} expert(s) with Ray Train ({len(jobs) - len(todo)} cached)")
    queue = make_packs(todo, resources.experts_per_fit)
    outcomes: list[ExpertOutcome] = []
    running: dict = {}
    failed: set[str] = set()

    def unfinished() -> set[str]:
        return {j.key for pack in [*queue, *running.values()] for j in pack}

    def finish(job: ExpertJob, ok: bool, detail) -> None:
        if ok:
            log(
                f"  expert {job.task:<14} seed {job.seed}: test acc {detail.get('test_accuracy', float('nan')):.3f} "
                f"({detail.get('seconds', float('nan')):.0f} s)"
            )
        else:
            failed.add(job.key)
            if not str(detail).startswith("blocked"):
                log(f"  expert {job.task} seed {job.seed} FAILED: {detail}")
        outcomes.append(ExpertOutcome(job, ok, detail))
        if on_done is not None:  # the console's progress display
            on_done(outcomes[-1])

    def launch_ready() -> None:
        limit = fits_in_flight(ray.cluster_resources(), resources)
        for pack in list(queue):
            blocked = [j for j in pack if j.init_from in failed]
            if blocked:  # a failed link: it and the rest of its chain in this pack are not trained
                first = pack.index(blocked[0])
                for job in pack[first:]:
                    finish(job, False, f"blocked: previous split {job.init_task} failed")
                queue.remove(pack)
                if first:
                    queue.insert(0, pack[:first])
                return launch_ready()
            keys = {j.key for j in pack}
            waiting = unfinished() - keys
            if len(running) >= limit or any(j.init_from in waiting for j in pack):
                continue
            ref = _fit_pack.remote([dataclasses.asdict(j) for j in pack], str(storage.root), resources.model_dump())
            running[ref] = pack
            queue.remove(pack)

    reported: set[str] = set()

    def report_stored() -> None:
        """A pack's experts as they land in the store, not all when its run ends."""
        for pack in running.values():
            for job in pack:
                if job.key not in reported and (manifest := expert_store.read_manifest(job, storage)) is not None:
                    reported.add(job.key)
                    finish(job, True, {"task": job.task, **manifest["metrics"]})

    launch_ready()
    while running:
        done, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_POLL_S)
        if not done:
            report_stored()
            continue
        pack = running.pop(done[0])
        try:
            for job, detail in zip(pack, ray.get(done[0])):
                if job.key not in reported:
                    finish(job, True, detail)
        except Exception as exc:  # a failed expert is reported; the others are kept
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            retry = []
            for job in pack:
                manifest = expert_store.read_manifest(job, storage)
                if job.key in reported:
                    continue
                if manifest is not None:
                    finish(job, True, {"task": job.task, **manifest["metrics"]})
                elif len(pack) > 1:
                    retry.append([job])
                else:
                    finish(job, False, message)
            if retry:
                log(f"  a run of {len(pack)} experts failed ({message}); retrying its unfinished ones one per run")
                queue[:0] = retry
        launch_ready()
    for pack in queue:  # unreachable chain links (defensive: should be empty)
        for job in pack:
            outcomes.append(ExpertOutcome(job, False, "blocked: previous split missing"))
    return outcomes
