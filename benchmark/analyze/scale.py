"""Scale sensitivity (docs/METHODS.md §4): what a factor α does to a whole model, a task vector and a merge.

Every merger needs a λ (the reason Weight Weaving exists); this sweep shows how sharply outputs
react to it. Three targets, each over the same α grid: the whole fine-tuned model α·θt (every
image-encoder weight scaled), one task vector θ0 + α·τt, and the task-arithmetic merge θ0 + α·M.
Measured against the unscaled model (α = 1): accuracy, agreement of predictions, and the mean
KL(p_1 ‖ p_α) of the softmax outputs. The single-expert targets use the setup's first expert on
its own test split; the merge is evaluated as the grid evaluates it (per setup kind).
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.table import Table

import ww
from benchmark.analyze import predict
from benchmark.analyze.context import AnalysisContext, BankRef
from benchmark.analyze.output import figure, save_figure, write_table
from benchmark.experts import store as expert_store

NAME = "scale"
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
MERGER = "task_arithmetic"
TARGETS = ("whole_model", "task_vector", "merge")


def _sweep(model, head, images, labels, load) -> list[dict]:
    """Evaluate ``load(α)`` for every α; compare each with α = 1."""
    logits = {}
    for alpha in ALPHAS:
        load(alpha)
        logits[alpha] = predict.head_logits(model, head, predict.image_features(model, images))
    reference = logits[1.0]
    rows = []
    for alpha in ALPHAS:
        acc, correct = predict.accuracy(logits[alpha], labels)
        rows.append(
            {
                "alpha": alpha,
                "accuracy": acc,
                "n_correct": correct,
                "n_examples": len(labels),
                "agreement": predict.agreement(logits[alpha], reference),
                "kl": predict.mean_kl(reference, logits[alpha]),
            }
        )
    return rows


def _measure(ctx: AnalysisContext, ref: BankRef) -> list[dict]:
    assets = ctx.warm(ref.model)
    bank = ctx.bank(ref.model, ref.jobs)
    model = assets.base.model
    base = ref.identity(ctx.spec.name)
    rows = []

    task = ref.tasks[0]
    images, labels = ctx.test_split(ref.model, task, ref.setup)
    head = ctx.head(ref.model, task)
    expert_state = expert_store.load_expert(ref.jobs[0], ctx.storage)
    tau = bank.state_dict(0)

    def whole_model(alpha: float) -> None:
        model.visual.load_state_dict({k: v * alpha if v.is_floating_point() else v for k, v in expert_state.items()})

    def task_vector(alpha: float) -> None:
        model.visual.load_state_dict(ww.apply_task_vector(assets.theta0_visual, tau, scale=alpha))

    for target, load in (("whole_model", whole_model), ("task_vector", task_vector)):
        for row in _sweep(model, head, images, labels, load):
            rows.append({**base, "target": target, "scaled": task, "eval_task": task, **row})

    groups: dict[tuple[int, ...], list[str]] = {}
    for evaluation in ref.setup.evaluations():
        groups.setdefault(evaluation.experts, []).append(evaluation.task)
    for experts, tasks in groups.items():
        if experts == tuple(range(len(bank))):
            sub = bank
        else:  # DG: the experts of the other domains
            index = torch.tensor(experts, dtype=torch.long)
            sub = ww.TaskVectorBank.from_flat(
                bank.data.index_select(0, index), bank.layout, [bank.task_names[i] for i in experts]
            )
        merged = ww.merge(MERGER, sub)

        def merge(alpha: float) -> None:
            model.visual.load_state_dict(ww.apply_task_vector(assets.theta0_visual, merged, scale=alpha))

        for eval_task in tasks:
            images, labels = ctx.test_split(ref.model, eval_task, ref.setup)
            head = ctx.head(ref.model, eval_task)
            for row in _sweep(model, head, images, labels, merge):
                rows.append(
                    {
                        **base,
                        "target": "merge",
                        "scaled": f"{MERGER}({len(experts)} experts)",
                        "eval_task": eval_task,
                        **row,
                    }
                )
    return rows


def _mean_by_target(rows: list[dict], value: str) -> dict[tuple[str, float], float]:
    groups: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        groups.setdefault((row["target"], row["alpha"]), []).append(row[value])
    return {key: sum(values) / len(values) for key, values in groups.items()}


def _figure(ref: BankRef, rows: list[dict], path: Path) -> Path:
    fig = figure(figsize=(14, 3.8), layout="constrained")
    panels = fig.subplots(1, 3)
    for axes, (value, label) in zip(
        panels, (("accuracy", "accuracy"), ("agreement", "agreement with α = 1"), ("kl", "mean KL(p₁ ‖ p_α)"))
    ):
        means = _mean_by_target(rows, value)
        for target in TARGETS:
            axes.plot(ALPHAS, [means[target, alpha] for alpha in ALPHAS], marker="o", label=target.replace("_", " "))
        axes.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
        axes.set_xlabel("α")
        axes.set_ylabel(label)
    panels[0].legend(fontsize=8)
    fig.suptitle(
        f"scale sensitivity · {ref.model.name} · {ref.setup.name} · seed {ref.seed} "
        f"(α·θ, θ0 + α·τ of {ref.tasks[0]}, θ0 + α·M {MERGER})",
        fontsize=10,
    )
    return save_figure(fig, path)


def run(ctx: AnalysisContext) -> list[Path]:
    rows, written = [], []
    for ref in ctx.refs:
        measured = _measure(ctx, ref)
        rows += measured
        written.append(_figure(ref, measured, ctx.out / f"{NAME}-{ref.label}.png"))
        means = {value: _mean_by_target(measured, value) for value in ("accuracy", "agreement", "kl")}
        table = Table(
            title=f"Scale sensitivity · {ctx.row_label(ref)}: accuracy · agreement with α = 1 · "
            "KL(p₁ ‖ p_α), mean over eval tasks"
        )
        table.add_column("α", justify="right")
        for target in TARGETS:
            table.add_column(target.replace("_", " "), justify="right")
        for alpha in ALPHAS:
            table.add_row(
                f"{alpha:g}",
                *(
                    f"{means['accuracy'][t, alpha]:.3f}·{means['agreement'][t, alpha]:.3f}·{means['kl'][t, alpha]:.2g}"
                    for t in TARGETS
                ),
            )
        ctx.console.print(table)
        ctx.console.print(
            f"whole model = α·θ and task vector = θ0 + α·τ of expert {ref.tasks[0]} on its test split; "
            f"merge = θ0 + α·M ({MERGER})",
            style="dim",
        )
    written.append(write_table(rows, ctx.out / f"{NAME}.parquet"))
    return written
