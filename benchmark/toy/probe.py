"""Probe a toy world: is merging in the paper's regime on this θ0, these tasks and this recipe?

The probe that chose the embedded world (README, "The toy world"), kept so the next person can
re-run it after changing the model, the pre-training, the tasks or the fine-tuning recipe. It
fine-tunes experts in-process (no Ray, no storage root) and merges them directly with ``ww``, so a
whole λ sweep costs evaluations only. Per seed it measures, for the setups asked for:

- MTL: zero-shot, experts, task arithmetic and TIES at λ = 1, at their oracle λ (test data) and
  woven (avg pooling, collaborative A*);
- CIL (sequential and/or independent): the same merges evaluated task-agnostically on the joint
  head, plus the mean pairwise cosine of the task vectors;
- DG: per held-out domain, the merge of the other domains' experts against zero-shot.

Then it checks the world's targets (the issue's list) on the seed means, with the gaps compared to
three seed standard deviations. ``python run_bench.py toy probe --help`` lists the knobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ww
from benchmark.data import loaders as toy_data
from benchmark.experts.finetune import FinetuneRecipe, finetune_image_encoder, steps_for_epochs
from benchmark.model.heads import zeroshot_head
from benchmark.spec.schema import DataSpec
from benchmark.trials.evaluation import evaluate

MTL_TASKS = ("digits", "shapes", "colours", "stripes", "dots", "arrows")
DG_DOMAINS = ("photo", "sketch", "negative", "mosaic", "greyscale")
MERGERS = ("task_arithmetic", "ties")


class World:
    """θ0, its tokenizer and cached heads/splits for one probe process."""

    def __init__(self, theta0: Path | None, data: DataSpec):
        from benchmark.toy import create_toy_model, toy_tokenizer
        from benchmark.toy.shipped import load_shipped_state

        self.model = create_toy_model(seed=0)
        if theta0 is None:
            self.model.load_state_dict(load_shipped_state())
        else:
            from safetensors.torch import load_file

            self.model.load_state_dict(load_file(str(theta0)))
        self.model.eval()
        self.tokenizer = toy_tokenizer()
        self.base = {k: v.detach().clone() for k, v in self.model.visual.state_dict().items()}
        self.data = data
        self._heads: dict[str, torch.Tensor] = {}
        self._splits: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def head(self, task: str) -> torch.Tensor:
        if task not in self._heads:
            self._heads[task] = zeroshot_head(
                self.model, self.tokenizer, toy_data.classnames(task), toy_data.templates(task)
            )
        return self._heads[task]

    def split(self, task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
        if (task, split) not in self._splits:
            self._splits[task, split] = toy_data.load_split(task, split, self.data)
        return self._splits[task, split]

    def accuracy(self, visual_state: dict[str, torch.Tensor], task: str) -> float:
        self.model.visual.load_state_dict(visual_state)
        images, labels = self.split(task, "test")
        return 100.0 * evaluate(self.model, self.head(task), images, labels)["accuracy"]

    def finetune(self, task: str, recipe: FinetuneRecipe, start: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.model.visual.load_state_dict(start)
        images, labels = self.split(task, "train")
        finetune_image_encoder(self.model, self.head(task), images, labels, recipe)
        state = {k: v.detach().clone() for k, v in self.model.visual.state_dict().items()}
        self.model.visual.load_state_dict(self.base)
        return state

    def merged(self, vector: dict[str, torch.Tensor], lam: float = 1.0) -> dict[str, torch.Tensor]:
        return {k: v + lam * vector[k] if k in vector else v for k, v in self.base.items()}


def _merges(world: World, taus: list[dict], evals: list[str], seed: int) -> dict[str, float]:
    """λ = 1, oracle λ and woven (avg, A*) accuracy (mean over ``evals``) for each merger."""
    out: dict[str, float] = {}
    for merger in MERGERS:
        merged = ww.merge(merger, taus)
        curve = {
            lam: float(np.mean([world.accuracy(world.merged(merged, lam), t) for t in evals]))
            for lam in ww.default_lambdas(merger)
        }
        best = max(curve, key=curve.get)
        woven = ww.weave(taus, merger, pooling="avg", collaborative=True, seed=seed)
        out[f"{merger} λ=1"] = curve[1.0]
        out[f"{merger} oracle"] = curve[best]
        out[f"{merger} oracle λ"] = best
        out[f"{merger} woven"] = float(np.mean([world.accuracy(world.merged(woven), t) for t in evals]))
    return out


def _mean_cosine(taus: list[dict]) -> float:
    flat = [torch.cat([v.flatten() for v in tau.values()]) for tau in taus]
    cos = [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in itertools.combinations(flat, 2)]
    return float(np.mean(cos))


def probe_mtl(world: World, recipe: FinetuneRecipe, tasks: tuple[str, ...]) -> dict[str, float]:
    experts = {t: world.finetune(t, recipe, world.base) for t in tasks}
    row = {
        "zero-shot": float(np.mean([world.accuracy(world.base, t) for t in tasks])),
        "experts": float(np.mean([world.accuracy(experts[t], t) for t in tasks])),
    }
    for t in tasks:
        row[f"zs {t}"] = world.accuracy(world.base, t)
        row[f"expert {t}"] = world.accuracy(experts[t], t)
    taus = [ww.task_vector(experts[t], world.base) for t in tasks]
    row.update(_merges(world, taus, list(tasks), recipe.seed))
    return row


def probe_cil(
    world: World, recipe: FinetuneRecipe, dataset: str, n_splits: int, mode: str, epochs: float
) -> dict[str, float]:
    splits = [f"{dataset}[{i}/{n_splits}]" for i in range(n_splits)]
    experts, start = [], world.base
    for task in splits:
        n_train = len(world.split(task, "train")[1])
        sized = FinetuneRecipe(**{**recipe.__dict__, "steps": steps_for_epochs(epochs, n_train, recipe.batch_size)})
        state = world.finetune(task, sized, start)
        experts.append(state)
        if mode == "sequential":
            start = state
    row = {
        "zero-shot": world.accuracy(world.base, dataset),
        "experts": float(np.mean([world.accuracy(e, t) for e, t in zip(experts, splits)])),
    }
    taus = [ww.task_vector(e, world.base) for e in experts]
    row["cosine"] = _mean_cosine(taus)
    row.update(_merges(world, taus, [dataset], recipe.seed))
    return row


def probe_dg(world: World, recipe: FinetuneRecipe, dataset: str, domains: tuple[str, ...]) -> dict[str, float]:
    tasks = [f"{dataset}/{d}" for d in domains]
    taus = [ww.task_vector(world.finetune(t, recipe, world.base), world.base) for t in tasks]
    zs, merged_ta, merged_woven = [], [], []
    for i, held_out in enumerate(tasks):
        others = [tau for j, tau in enumerate(taus) if j != i]
        zs.append(world.accuracy(world.base, held_out))
        ta = ww.merge("task_arithmetic", others)
        merged_ta.append(max(world.accuracy(world.merged(ta, lam), held_out) for lam in (0.2, 0.3, 0.5)))
        woven = ww.weave(others, "task_arithmetic", pooling="avg", collaborative=True, seed=recipe.seed)
        merged_woven.append(world.accuracy(world.merged(woven), held_out))
    return {
        "zero-shot": float(np.mean(zs)),
        "task_arithmetic best of λ∈{.2,.3,.5}": float(np.mean(merged_ta)),
        "task_arithmetic woven": float(np.mean(merged_woven)),
    }


def _targets(rows: dict[str, list[dict]]) -> list[tuple[str, bool, str]]:
    """The world's targets on seed means; a gap passes only if it also exceeds 3 seed stds."""

    def stat(setup, key):
        values = np.array([r[key] for r in rows[setup]])
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    def gap(setup, a, b, minimum=0.0):
        values = np.array([r[a] - r[b] for r in rows[setup]])
        m, s = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
        return m, s, m >= minimum and m > 3 * s

    checks: list[tuple[str, bool, str]] = []
    if "mtl" in rows:
        m, s, ok = gap("mtl", "experts", "zero-shot", 25.0)
        checks.append(("MTL experts ≥ zero-shot + 25", ok, f"{m:+.1f} ± {s:.1f}"))
        zs, ex, ta = (stat("mtl", k)[0] for k in ("zero-shot", "experts", "task_arithmetic oracle"))
        rec = (ta - zs) / (ex - zs) if ex - zs >= 1.0 else float("nan")  # undefined without an expert gain
        checks.append(
            (
                "MTL TA oracle recovers ≥ 50 % of the expert gain",
                bool(rec >= 0.5),
                f"{100 * rec:.0f} % of {ex - zs:+.1f}",
            )
        )
        m, s, ok = gap("mtl", "task_arithmetic oracle", "task_arithmetic λ=1", 3.0)
        checks.append(("MTL TA λ=1 clearly below its oracle", ok, f"{m:+.1f} ± {s:.1f}"))
        for merger in MERGERS:
            m, s, _ = gap("mtl", f"{merger} oracle", f"{merger} woven")
            checks.append((f"MTL {merger} woven within 2 of its oracle", m <= 2.0, f"{m:.1f} ± {s:.1f}"))
    for mode in ("sequential", "independent"):
        setup = f"cil-{mode}"
        if setup not in rows:
            continue
        best = np.array(
            [max(r[f"{m} {p}"] for m in MERGERS for p in ("λ=1", "woven")) - r["zero-shot"] for r in rows[setup]]
        )
        s = float(best.std(ddof=1)) if len(best) > 1 else 0.0
        checks.append(
            (
                f"CIL {mode}: best data-free merge ≥ zero-shot + 10",
                best.mean() >= 10 and best.mean() > 3 * s,
                f"{best.mean():+.1f} ± {s:.1f}",
            )
        )
        for merger in MERGERS:
            m, s, _ = gap(setup, f"{merger} woven", f"{merger} λ=1")
            checks.append((f"CIL {mode}: {merger} woven ≥ λ=1", m >= 0, f"{m:+.1f} ± {s:.1f}"))
    if "cil-sequential" in rows and "cil-independent" in rows:
        seq, ind = stat("cil-sequential", "cosine")[0], stat("cil-independent", "cosine")[0]
        checks.append(("CIL sequential τ more correlated than independent", seq > ind + 0.1, f"{seq:.2f} vs {ind:.2f}"))
    if "dg" in rows:
        m, s, ok = gap("dg", "task_arithmetic woven", "zero-shot")
        checks.append(("DG merged other domains > zero-shot (woven TA)", ok and m > 0, f"{m:+.1f} ± {s:.1f}"))
    return checks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_bench.py toy probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--theta0", type=Path, default=None, help="θ0 safetensors (default: the shipped toy θ0)")
    p.add_argument(
        "--setups",
        default="mtl,cil-sequential,cil-independent,dg",
        help="comma-separated subset of mtl, cil-sequential, cil-independent, dg",
    )
    p.add_argument("--seeds", default="0", help="fine-tuning seeds, comma-separated (default: 0)")
    p.add_argument("--tasks", default=",".join(MTL_TASKS), help="MTL tasks")
    p.add_argument("--steps", type=int, default=200, help="fine-tuning steps (MTL, DG)")
    p.add_argument("--lr", type=float, default=1.5e-4, help="fine-tuning lr of the MTL experts (the quickstart's)")
    p.add_argument("--cil-lr", type=float, default=1e-4, help="fine-tuning lr of the CIL split experts (toy_cil)")
    p.add_argument("--dg-lr", type=float, default=1e-4, help="fine-tuning lr of the DG experts (toy_dg.yaml's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--cil-epochs", type=float, default=20.0)
    p.add_argument("--cil-splits", type=int, default=4)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine two threads wait on each other; 0 = torch's default)",
    )
    p.add_argument("--shift", default=None, help="the tasks' sensor shift to probe (benchmark.toy.suite.TASK_SHIFTS)")
    p.add_argument("--cil-dataset", default="shapes", help="dataset split for CIL (toy_cil.yaml's)")
    p.add_argument("--json", type=Path, default=None, help="also write every row to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shift is not None:
        from benchmark.toy import suite

        if args.shift not in suite.TASK_SHIFTS:
            raise ValueError(f"unknown --shift {args.shift!r}; choose among {sorted(suite.TASK_SHIFTS)}")
        suite.TASK_SHIFT = args.shift
    world = World(args.theta0, DataSpec(n_train=args.n_train, n_test=args.n_test, seed=0))
    setups = [s for s in args.setups.split(",") if s]
    unknown = set(setups) - {"mtl", "cil-sequential", "cil-independent", "dg"}
    if unknown:
        raise ValueError(
            f"unknown probe setups {sorted(unknown)}; choose among mtl, cil-sequential, cil-independent, dg"
        )
    rows: dict[str, list[dict]] = {s: [] for s in setups}
    started = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        recipe = FinetuneRecipe(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup=args.warmup,
            weight_decay=0.1,
            grad_clip=1.0,
            seed=seed,
        )
        for setup in setups:
            if setup == "mtl":
                row = probe_mtl(world, recipe, tuple(args.tasks.split(",")))
            elif setup.startswith("cil-"):
                cil_recipe = dataclasses.replace(recipe, lr=args.cil_lr)
                row = probe_cil(world, cil_recipe, args.cil_dataset, args.cil_splits, setup[4:], args.cil_epochs)
            else:
                row = probe_dg(world, dataclasses.replace(recipe, lr=args.dg_lr), "objects", DG_DOMAINS)
            rows[setup].append(row)
            shown = {k: round(v, 2) for k, v in row.items() if not k.startswith(("zs ", "expert "))}
            print(
                f"[{time.perf_counter() - started:.0f} s] seed {seed} {setup}: {json.dumps(shown, ensure_ascii=False)}",
                flush=True,
            )
    print("\nmeans ± seed std")
    for setup, values in rows.items():
        print(f"  {setup}")
        for key in values[0]:
            xs = np.array([r[key] for r in values])
            print(f"    {key:<34} {xs.mean():7.2f} ± {xs.std(ddof=1) if len(xs) > 1 else 0.0:.2f}")
    print("\ntargets")
    for name, ok, detail in _targets(rows):
        print(f"  [{'x' if ok else ' '}] {name}: {detail}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
