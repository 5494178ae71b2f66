"""Fine-tuning checkpoints sized for real models: a size-aware default cadence, one kept while the
expert trains, deleted once it is written (unless asked to keep it), bytes recorded in its manifest."""

from __future__ import annotations

import shutil

from benchmark.experts import store as expert_store
from benchmark.experts.training import checkpoints_per_run, default_checkpoint_every, fit_experts, fits_in_flight
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import ResourcesSpec, parse_spec
from tests.conftest import tiny_spec_dict

GB = 10**9


def test_the_default_cadence_thins_out_as_checkpoints_grow():
    assert checkpoints_per_run(3 * 1_600_000) == 4  # the toy
    assert checkpoints_per_run(3 * 352 * 10**6) == 4  # ViT-B-32: encoder + AdamW's moments
    assert checkpoints_per_run(int(1.5 * GB)) == 2
    assert checkpoints_per_run(int(3.65 * GB)) == 1  # ViT-L-14
    assert checkpoints_per_run(40 * GB) == 1  # never none by default: a long run can always resume
    assert default_checkpoint_every(2000, 3 * 352 * 10**6) == 400  # four, none after the last step
    assert default_checkpoint_every(2000, int(3.65 * GB)) == 1000
    assert default_checkpoint_every(8, 1000) == 0  # too short to be worth resuming
    assert default_checkpoint_every(30, 1000) == 10


def test_experts_in_flight_follow_what_the_cluster_can_train_plus_one_waiting():
    one_machine = ResourcesSpec(expert_workers=1, cpus_per_expert_worker=2, gpus_per_expert_worker=0)
    assert fits_in_flight({"CPU": 2.0}, one_machine) == 2  # one training, one queued: not all twenty at once
    assert fits_in_flight({"CPU": 16.0}, one_machine) == 9
    gpus = ResourcesSpec(expert_workers=4, cpus_per_expert_worker=4, gpus_per_expert_worker=1)
    assert fits_in_flight({"CPU": 192.0, "GPU": 8.0}, gpus) == 3  # GPUs bind: two 4-GPU fits
    assert fits_in_flight({"CPU": 8.0}, gpus) == 2  # no GPU yet (an autoscaler's head): one waits for a node


def _checkpoint_dirs(storage: StorageRoot, job) -> list:
    return [p for p in (storage.root / "runs" / "experts").glob(f"expert-*-{job.key}/checkpoint_*") if p.is_dir()]


def test_checkpoints_are_counted_in_the_manifest_and_deleted_unless_kept(finished_tiny_run, tmp_path):
    _, finished, _, _ = finished_tiny_run
    root = tmp_path / "root"
    shutil.copytree(finished.root, root, ignore=shutil.ignore_patterns("runs", "results", "experts"))
    storage = StorageRoot.at(root)
    jobs = {}
    for task, keep in ((0, False), (1, True)):
        spec_dict = tiny_spec_dict()
        # another lr: new experts (the cadence and keeping are not part of the key)
        spec_dict["setups"][0]["finetune"].update(lr=2e-4, checkpoint_every=3, keep_checkpoints=keep)
        spec = parse_spec(spec_dict)
        jobs[keep] = build_plan(spec).experts[task]
    outcomes = fit_experts(list(jobs.values()), storage, spec.resources, log=lambda message: None)  # at once
    assert all(outcome.ok for outcome in outcomes), [outcome.detail for outcome in outcomes]
    for keep, job in jobs.items():
        manifest = expert_store.read_manifest(job, storage)
        # 8 steps, every 3: after steps 3 and 6; each holds the encoder and AdamW's two moments
        assert manifest["metrics"]["checkpoints"] == 2
        assert 2 * 3 * manifest["bytes"] <= manifest["metrics"]["checkpoint_bytes"] <= 2 * 3.2 * manifest["bytes"]
        assert len(_checkpoint_dirs(storage, job)) == (1 if keep else 0)
