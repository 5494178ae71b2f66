"""``run_bench.py toy pretrain | probe``: rebuild the shipped θ0, probe a toy world.

``pretrain`` runs the toy pre-training recipe (the spec default, which is the shipped θ0's) and
writes the weights and their manifest; ``probe`` is :mod:`benchmark.toy.probe`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _pretrain_parser() -> argparse.ArgumentParser:
    from benchmark.spec.schema import PretrainSpec

    defaults = PretrainSpec()
    p = argparse.ArgumentParser(
        prog="run_bench.py toy pretrain",
        description="Pre-train the toy θ0 from its recipe (default: the shipped θ0's recipe) "
        "and write FILE plus its manifest FILE.json.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="weights file (default: ./ww-toy-vit-<key>.safetensors); the shipped pair is "
        "benchmark/toy/theta0/ww-toy-vit.safetensors",
    )
    for field, value in defaults.model_dump().items():
        p.add_argument(
            f"--{field.replace('_', '-')}", type=type(value), default=value, help=f"recipe field (default: {value})"
        )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; the result is bit-reproducible for a given torch build and thread count (default: 1)",
    )
    return p


def cmd_pretrain(argv: list[str]) -> int:
    import torch
    from safetensors.torch import save_file

    from benchmark.model.pretrained import base_key
    from benchmark.spec.schema import ModelSpec, PretrainSpec
    from benchmark.toy import TOY_MODEL, PretrainRecipe, create_toy_model, pretrain
    from benchmark.toy.shipped import SHIPPED_WEIGHTS, shipped_manifest, write_manifest

    args = _pretrain_parser().parse_args(argv)
    recipe_spec = PretrainSpec(**{f: getattr(args, f) for f in PretrainSpec.model_fields})
    key = base_key(ModelSpec(name=TOY_MODEL, pretrained="toy", pretrain=recipe_spec))
    out = args.out or Path(f"{TOY_MODEL}-{key[:8]}.safetensors")
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out} must end in .safetensors (its manifest goes next to it as .json)")
    torch.set_num_threads(args.threads)
    recipe = PretrainRecipe(**recipe_spec.model_dump())
    model = create_toy_model(seed=recipe.seed)
    started = time.perf_counter()
    metrics = pretrain(
        model,
        recipe,
        log=lambda m: print(
            f"  step {int(m['step']):>5}  loss {m['loss']:.3f}  ({time.perf_counter() - started:.0f} s)", flush=True
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    changed = [
        f"--{f.replace('_', '-')} {v}" for f, v in recipe_spec.model_dump().items() if v != getattr(PretrainSpec(), f)
    ]
    command = " ".join(["python run_bench.py toy pretrain", *changed, f"--out {out}"])
    manifest = write_manifest(out, key=key, recipe=recipe_spec.model_dump(), metrics=metrics, command=command)
    print(f"wrote {out} ({manifest['bytes'] / 1e6:.1f} MB, sha256 {manifest['sha256']}) and {out.with_suffix('.json')}")
    shipped = shipped_manifest()
    if shipped is not None and out.resolve() != SHIPPED_WEIGHTS and shipped["key"] == key:
        same = shipped["sha256"] == manifest["sha256"]
        print(
            "identical to the shipped θ0"
            if same
            else f"differs from the shipped θ0 (sha256 {shipped['sha256'][:12]}…; torch {shipped['torch']} with "
            f"{shipped['torch_threads']} thread(s) made it, this is torch {manifest['torch']} with {args.threads})"
        )
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: run_bench.py toy {pretrain,probe} [--help]\n\n"
            "  pretrain  rebuild the toy θ0 from its recipe (the shipped one by default)\n"
            "  probe     measure a toy world: experts, merges at λ = 1 / oracle / woven, MTL, CIL, DG"
        )
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "pretrain":
        return cmd_pretrain(rest)
    if command == "probe":
        from benchmark.toy.probe import main as probe_main

        return probe_main(rest)
    raise ValueError(f"unknown toy command {command!r}; use 'pretrain' or 'probe'")
