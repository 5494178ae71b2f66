"""Stage 2–3 of the data flow: θ0, cached tensors and zero-shot heads, before any expert trains.

Runs as one Ray task per model so that the toy pre-training (minutes) or a real model's head
computation happens on a worker with the resources the spec gives it, once, and is cached.
"""

from __future__ import annotations

import json
import time

import ray

from benchmark import eval_cache
from benchmark.keys import content_key, revision
from benchmark.specs import DataSpec, ModelSpec
from benchmark.storage import StorageRoot, safe_name, write_text_atomic


def prepare_model_assets(model: dict, tasks: list[tuple[str, dict, bool]], root: str) -> dict:
    """Ensure θ0, the train/test tensors and the head of every task; return zero-shot accuracies."""
    from benchmark.evaluation import evaluate
    from benchmark.head_cache import load_head
    from benchmark.models import base_key, ensure_base_model, load_base_model

    storage = StorageRoot.at(root)
    spec = ModelSpec(**model)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    progress = pretrain_progress_path(storage, spec)
    steps = spec.pretrain.steps if spec.pretrain is not None else 0
    pretrain_metrics = ensure_base_model(spec, storage, log=lambda m: write_text_atomic(progress, json.dumps(
        {"step": int(m["step"]) + 1, "steps": steps, "loss": m["loss"]})))
    timings["pretrain_seconds"] = time.perf_counter() - start
    base = load_base_model(spec, storage)
    zeroshot: dict[str, dict] = {}
    for task, data, trains in tasks:  # trains: an expert fine-tunes on this task (cache its train split)
        data_spec = DataSpec(**data)
        key = zeroshot_key(base_key(spec), task, data_spec)
        path = storage.cache / "zeroshot" / base.key / f"{safe_name(task)}-{key}.json"
        if trains:
            eval_cache.ensure_split(storage, task, "train", data_spec, resolution=base.resolution)
        if path.exists():
            zeroshot[f"{task}|{key}"] = json.loads(path.read_text())
            continue
        head = load_head(storage, base, task)
        images, labels = eval_cache.load_split(storage, task, "test", data_spec, resolution=base.resolution)
        result = evaluate(base.model, head, images, labels)
        write_text_atomic(path, json.dumps(result))
        zeroshot[f"{task}|{key}"] = result
    return {"zeroshot": zeroshot, "pretrain": pretrain_metrics, **timings}


def zeroshot_key(base: str, task: str, data: DataSpec) -> str:
    """Key of θ0's cached zero-shot accuracy on ``task``: its head, tensors and evaluation, each
    with the revision of the code that produces it."""
    from benchmark.eval_cache import tensor_revision

    return content_key("zeroshot", {"base": base, "task": task, "data": data, "tensors": tensor_revision(task),
                                    "heads": revision("heads"), "eval": revision("eval")})


def pretrain_progress_path(storage: StorageRoot, model: ModelSpec):
    """Where the toy pre-training records its last logged step: the driver reads it for its progress bar."""
    from benchmark.models import base_key

    return storage.cache / "progress" / f"pretrain-{base_key(model)}.json"


def zeroshot_lookup(prepared: dict, model: ModelSpec, task: str, data: DataSpec) -> dict:
    from benchmark.models import base_key

    key = zeroshot_key(base_key(model), task, data)
    return prepared["zeroshot"][f"{task}|{key}"]


def prepare_remote(cpus: float, gpus: float):
    return ray.remote(num_cpus=cpus, num_gpus=gpus)(prepare_model_assets)
