"""Stage 2–3 of the data flow: θ0, cached tensors and zero-shot heads, before any expert trains.

Runs as one Ray task per model so that the toy pre-training (minutes) or a real model's head
computation happens on a worker with the resources the spec gives it, once, and is cached.
"""

from __future__ import annotations

import base64
import json
import resource
import time
from typing import Any, Callable, Iterator

import ray

from benchmark.report.paired import pack_correct
from benchmark.results.storage import StorageRoot, safe_name, write_text_atomic
from benchmark.spec.keys import content_key, revision
from benchmark.spec.schema import DataSpec, ModelSpec
from benchmark.trials import eval_cache


def iter_prepare_model_assets(model: dict, tasks: list[tuple[str, dict, bool]], root: str) -> Iterator[tuple[str, Any]]:
    """Ensure θ0, the train/test tensors and the head of every task, saying what is done as it goes.

    Yields ``("progress", line)`` after each piece of work (θ0, each task's tensors and head),
    then ``("result", prepared)`` once. At real size a task's head or 224 px tensors take minutes
    on a few cores: the driver prints each line so that a long preparation is visibly moving.
    """
    from benchmark.data import loaders as datasets
    from benchmark.model.head_cache import head_path, load_head
    from benchmark.model.pretrained import base_key, ensure_base_model, load_base_model
    from benchmark.trials.evaluation import evaluate

    storage = StorageRoot.at(root)
    spec = ModelSpec(**model)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    progress = pretrain_progress_path(storage, spec)
    steps = spec.pretrain.steps if spec.pretrain is not None else 0
    pretrain_metrics = ensure_base_model(
        spec,
        storage,
        log=lambda m: write_text_atomic(
            progress, json.dumps({"step": int(m["step"]) + 1, "steps": steps, "loss": m["loss"]})
        ),
    )
    timings["pretrain_seconds"] = time.perf_counter() - start
    base = load_base_model(spec, storage)
    yield "progress", f"{spec.name}: θ0 loaded ({time.perf_counter() - start:.0f} s)"
    zeroshot: dict[str, dict] = {}
    for i, (task, data, trains) in enumerate(tasks, 1):  # trains: an expert fine-tunes on this task
        data_spec = DataSpec(**data)
        key = zeroshot_key(base_key(spec), task, data_spec)
        path = storage.cache / "zeroshot" / base.key / f"{safe_name(task)}-{key}.json"
        where = f"{spec.name} [{i}/{len(tasks)}] {task}"
        if trains:
            clock = time.perf_counter()
            folder = eval_cache.ensure_split(storage, task, "train", data_spec, resolution=base.resolution)
            yield (
                "progress",
                f"{where}: train tensors cached ({_cached_images(folder)} images, {time.perf_counter() - clock:.0f} s)",
            )
        cached = json.loads(path.read_text()) if path.exists() else None
        if cached is not None and ZEROSHOT_BITS in cached:
            zeroshot[f"{task}|{key}"] = cached
            yield "progress", f"{where}: head and zero-shot accuracy already cached"
            continue
        # (a cache written before the per-example outcomes were kept is evaluated again, same accuracy)
        clock = time.perf_counter()
        cached_head = head_path(storage, base.key, task).exists()
        head = load_head(storage, base, task)
        yield (
            "progress",
            (
                f"{where}: head {'already cached' if cached_head else 'computed'} "
                f"({head.shape[0]} classes × {len(datasets.templates(task))} templates, "
                f"{time.perf_counter() - clock:.0f} s)"
            ),
        )
        clock = time.perf_counter()
        images, labels = eval_cache.load_split(storage, task, "test", data_spec, resolution=base.resolution)
        result = evaluate(base.model, head, images, labels, outcomes=True)
        # per-example outcomes, so a merge can be compared with θ0 example by example (--compare zeroshot)
        result[ZEROSHOT_BITS] = base64.b64encode(pack_correct(result.pop("correct"))).decode("ascii")
        write_text_atomic(path, json.dumps(result))
        zeroshot[f"{task}|{key}"] = result
        yield (
            "progress",
            (
                f"{where}: test tensors cached and zero-shot accuracy {result['accuracy']:.3f} "
                f"({len(labels)} images, {time.perf_counter() - clock:.0f} s)"
            ),
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    yield "result", {"zeroshot": zeroshot, "pretrain": pretrain_metrics, "peak_rss_bytes": peak_rss, **timings}


def _cached_images(folder) -> int:
    import numpy as np

    return len(np.load(eval_cache._paths(folder)[1], mmap_mode="r"))


def prepare_model_assets(
    model: dict, tasks: list[tuple[str, dict, bool]], root: str, log: Callable[[str], None] | None = None
) -> dict:
    """Ensure θ0, the train/test tensors and the head of every task; return zero-shot accuracies."""
    for kind, value in iter_prepare_model_assets(model, tasks, root):
        if kind == "result":
            return value
        if log is not None:
            log(value)
    raise RuntimeError("preparation ended without a result")  # pragma: no cover - the generator always yields one


#: θ0's per-example outcomes on a task's test split in its cached zero-shot result (base64 of packed bits)
ZEROSHOT_BITS = "correct_bits_b64"


def zeroshot_bits(result: dict) -> bytes | None:
    """The packed per-example outcomes of a cached zero-shot result (``benchmark.report.paired``)."""
    encoded = result.get(ZEROSHOT_BITS)
    return None if encoded is None else base64.b64decode(encoded)


def zeroshot_key(base: str, task: str, data: DataSpec) -> str:
    """Key of θ0's cached zero-shot accuracy on ``task``: its head, tensors and evaluation, each
    with the revision of the code that produces it."""
    from benchmark.trials.eval_cache import tensor_revision

    return content_key(
        "zeroshot",
        {
            "base": base,
            "task": task,
            "data": data,
            "tensors": tensor_revision(task),
            "heads": revision("heads"),
            "eval": revision("eval"),
        },
    )


def pretrain_progress_path(storage: StorageRoot, model: ModelSpec):
    """Where the toy pre-training records its last logged step: the driver reads it for its progress bar."""
    from benchmark.model.pretrained import base_key

    return storage.cache / "progress" / f"pretrain-{base_key(model)}.json"


def zeroshot_lookup(prepared: dict, model: ModelSpec, task: str, data: DataSpec) -> dict:
    from benchmark.model.pretrained import base_key

    key = zeroshot_key(base_key(model), task, data)
    return prepared["zeroshot"][f"{task}|{key}"]


def prepare_remote(cpus: float, gpus: float):
    """A streaming Ray task: the driver reads the progress lines while the work goes on.

    Its worker exits afterwards (``max_calls=1``): it grew to hold θ0 with the text tower, and Ray
    would otherwise hand that process, heap and all, to the next task (an expert's driving task).
    """
    return ray.remote(num_cpus=cpus, num_gpus=gpus, num_returns="streaming", max_calls=1)(iter_prepare_model_assets)
