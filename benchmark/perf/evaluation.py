"""``run_bench.py perf eval``: what the eval tensor cache buys, measured.

docs/DESIGN.md's performance principle for evaluation — cached uint8 tensors, normalisation on the
device, large batches — claims that a grid trial spends its time in the model, not in data
handling. This benchmark checks the claim on this machine, in one run, with one model:

- **decode**: every pass lists the test split, decodes each image file, resizes and crops it
  (threaded, as the cache builder does) and evaluates — what a loader without a cache does;
- **cached**: the split is decoded once into the eval cache (the real ``benchmark.trials.eval_cache``
  path; its build time is reported separately) and every pass memory-maps it and evaluates.

The images are PNG files of a fake EuroSAT-layout dataset written into a temporary data root
(read through the real registry), sized like the scene photos of the MTL datasets. Targets:
cached ≥ 5× the decode throughput with a small model, and data handling (batch slicing, uint8 →
normalised float) ≤ 10 % of the cached evaluation time. Results are printed and written to Parquet.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

TARGET_SPEEDUP = 5.0
TARGET_DATA_FRACTION = 0.10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py perf eval", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--model",
        default="toy",
        help="'toy' (the embedded tiny CLIP) or an open_clip model name, random init (default: toy)",
    )
    parser.add_argument("--n-images", type=int, default=1000, help="test images (default: 1000)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the PNG files (default: 256)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per path (default: 3)")
    parser.add_argument("--batch-size", type=int, default=250, help="evaluation batch (default: 250)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    parser.add_argument("--out", default="perf_eval.parquet", help="Parquet file of the results")
    parser.add_argument("--workdir", default=None, help="keep the fake data and cache here (default: a temp dir)")
    return parser


def write_png_folder(root: Path, n_images: int, side: int, seed: int = 0) -> None:
    """A fake EuroSAT_splits tree of PNGs: smooth colour fields plus noise, like photos compress."""
    from PIL import Image

    from benchmark.data.classnames import EUROSAT_FOLDERS

    rng = np.random.default_rng(seed)
    for split, count in (("train", len(EUROSAT_FOLDERS)), ("test", n_images)):
        for i in range(count):
            folder = root / "EuroSAT_splits" / split / EUROSAT_FOLDERS[i % len(EUROSAT_FOLDERS)]
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BICUBIC), dtype=np.int16)
            pixels = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def _model(name: str) -> torch.nn.Module:
    if name == "toy":
        from benchmark.toy import create_toy_model

        return create_toy_model(seed=0).eval()
    import logging

    import open_clip

    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(name, pretrained=None).eval()
    finally:
        logging.disable(logging.NOTSET)


def _timed_eval(model, head, batches, mean, std) -> tuple[float, float, int, int]:
    """(data seconds, model seconds, n, n correct) over ``batches`` of (uint8 source, labels).

    ``batches`` yields callables producing a uint8 batch, so producing it is timed as data time.
    """
    from benchmark.trials.evaluation import classification_logits, to_model_input

    data_s = model_s = 0.0
    n = correct = 0
    with torch.inference_mode():
        for produce, labels in batches:
            t0 = time.perf_counter()
            x = to_model_input(torch.as_tensor(produce()), mean, std)
            t1 = time.perf_counter()
            pred = classification_logits(model, head, x).argmax(dim=-1)
            t2 = time.perf_counter()
            data_s, model_s = data_s + t1 - t0, model_s + t2 - t1
            n += len(labels)
            correct += int((pred == torch.as_tensor(labels)).sum())
    return data_s, model_s, n, correct


def run(args) -> list[dict]:
    from benchmark.data import loaders as data
    from benchmark.data.images import decode_batches, default_threads
    from benchmark.model.pretrained import image_resolution
    from benchmark.results.storage import StorageRoot
    from benchmark.spec.schema import DataSpec
    from benchmark.trials import eval_cache
    from benchmark.trials.evaluation import evaluate, image_mean_std

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ww-perf-eval-"))
    data_root = workdir / "data"
    if not (data_root / "EuroSAT_splits" / "test").is_dir():
        write_png_folder(data_root, args.n_images, args.image_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _model(args.model)
    resolution = image_resolution(model)
    mean, std = image_mean_std(model)
    with torch.inference_mode():  # the head's width is the image embedding's
        width = model.encode_image(torch.zeros(1, 3, resolution, resolution)).shape[-1]
    head = torch.nn.functional.normalize(torch.randn(10, width, generator=torch.Generator().manual_seed(0)), dim=-1)
    shutil.rmtree(workdir / "root", ignore_errors=True)  # the cache build is part of what is measured
    storage = StorageRoot.at(workdir / "root")
    spec, task, bs = DataSpec(), "EuroSAT", args.batch_size
    load_before = os.getloadavg()[0]

    build = time.perf_counter()
    images, labels = eval_cache.load_split(storage, task, "test", spec, resolution=resolution, root=data_root)
    build = time.perf_counter() - build
    n = len(labels)

    def cached_pass() -> tuple[float, float]:
        # copying the batch out of the memory map is part of the data handling being measured
        batches = (((lambda s=s: np.array(images[s : s + bs])), labels[s : s + bs]) for s in range(0, n, bs))
        data_s, model_s, _, _ = _timed_eval(model, head, batches, mean, std)
        return data_s, model_s

    def decode_pass() -> tuple[float, float]:
        samples = data.open_split(task, "test", data_root)  # listing is part of every uncached pass
        decoded = decode_batches(samples.load, range(len(samples)), resolution, batch_size=bs)
        data_s = model_s = 0.0
        while True:
            t0 = time.perf_counter()
            item = next(decoded, None)
            t_decode = time.perf_counter() - t0
            if item is None:
                break
            offset, batch = item
            d, m, _, _ = _timed_eval(
                model, head, [(lambda b=batch: b, samples.labels[offset : offset + len(batch)])], mean, std
            )
            data_s, model_s = data_s + t_decode + d, model_s + m
        return data_s, model_s

    def evaluate_pass() -> tuple[float, float]:
        evaluate(model, head, images, labels, batch_size=bs)  # the harness's own function, end to end
        return float("nan"), float("nan")

    passes = {"decode": decode_pass, "cached": cached_pass, "cached (evaluation.evaluate)": evaluate_pass}
    cached_pass()  # warm-up: page cache, allocator, kernels
    timings: dict[str, list[tuple[float, float, float]]] = {name: [] for name in passes}
    for _ in range(args.passes):  # interleaved, so a change of background load hits every path alike
        for name, one_pass in passes.items():
            start = time.perf_counter()
            d, m = one_pass()
            timings[name].append((time.perf_counter() - start, d, m))
    common = {
        "model": args.model,
        "resolution": resolution,
        "n_images": n,
        "png_side": args.image_size,
        "batch_size": bs,
        "decode_threads": default_threads(),
        "torch_threads": torch.get_num_threads(),
        "passes": args.passes,
        "host": platform.node(),
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "cache_build_seconds": build,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }
    rows = []
    for name, values in timings.items():
        seconds = statistics.median(v[0] for v in values)
        d, m = statistics.median(v[1] for v in values), statistics.median(v[2] for v in values)
        rows.append(
            {
                **common,
                "path": name,
                "seconds_per_pass": seconds,
                "images_per_s": n / seconds,
                "data_seconds": d,
                "model_seconds": m,
                "data_fraction": d / (d + m) if d == d else float("nan"),
            }
        )
    return rows


def report(rows: list[dict], out: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rich.console import Console
    from rich.table import Table

    by = {r["path"]: r for r in rows}
    speedup = by["cached"]["images_per_s"] / by["decode"]["images_per_s"]
    fraction = by["cached"]["data_fraction"]
    for r in rows:
        r["speedup_vs_decode"] = r["images_per_s"] / by["decode"]["images_per_s"]
    table = Table(
        title=f"Evaluation throughput · model {rows[0]['model']} @ {rows[0]['resolution']} px · "
        f"{rows[0]['n_images']} PNG {rows[0]['png_side']} px · {rows[0]['torch_threads']} torch "
        f"threads · load average {rows[0]['load_average_before']:.1f}"
    )
    for col in ("path", "images/s", "s/pass", "data s", "model s", "data share", "× decode"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in rows:
        table.add_row(
            r["path"],
            f"{r['images_per_s']:.0f}",
            f"{r['seconds_per_pass']:.3f}",
            f"{r['data_seconds']:.3f}",
            f"{r['model_seconds']:.3f}",
            f"{r['data_fraction']:.1%}",
            f"{r['speedup_vs_decode']:.1f}",
        )
    console = Console()
    console.print(table)
    ok_speed, ok_share = speedup >= TARGET_SPEEDUP, fraction <= TARGET_DATA_FRACTION
    speed_colour, share_colour = ("green" if ok else "red" for ok in (ok_speed, ok_share))
    console.print(
        f"cache build (one-time): {rows[0]['cache_build_seconds']:.2f} s · cached ÷ decode = "
        f"[{speed_colour}]{speedup:.1f}×[/] (target ≥ {TARGET_SPEEDUP:.0f}×) · data share with the "
        f"cache [{share_colour}]{fraction:.1%}[/] (target ≤ {TARGET_DATA_FRACTION:.0%})"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out)
    console.print(f"results: {out}")
    return {"speedup": speedup, "data_fraction": fraction, "ok": ok_speed and ok_share}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.n_images < 1 or args.passes < 1 or args.batch_size < 1:
        raise ValueError("--n-images, --passes and --batch-size must be at least 1")
    verdict = report(run(args), Path(args.out))
    return 0 if verdict["ok"] else 1
