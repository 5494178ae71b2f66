"""Task-vector geometry (docs/METHODS.md §4): cosines of whole task vectors, per tensor and per block.

For sequential CIL chains the cumulative task vectors τs = θs − θ0 share their history, so they are
correlated by construction (√(s/t) for orthogonal equal increments); the cosines of the increments
θs − θs−1 and that baseline separate the construction from what fine-tuning did. When the root
also holds the same CIL setup fine-tuned independently, the two are compared, answering the claim
to test: does sequential fine-tuning make task vectors more correlated (more redundant)?
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.table import Table

import ww.analysis as wa
from benchmark.analyze.context import AnalysisContext, BankRef, twin_jobs
from benchmark.analyze.output import figure, save_figure, write_table
from benchmark.report.figures import plot_cosine_heatmap

NAME = "geometry"


def _pair_rows(base: dict, scope: str, group: str, tasks: list[str], cosines, baseline=None) -> list[dict]:
    rows = []
    for i, task_i in enumerate(tasks):
        for j, task_j in enumerate(tasks):
            rows.append(
                {
                    **base,
                    "scope": scope,
                    "group": group,
                    "i": i,
                    "j": j,
                    "task_i": task_i,
                    "task_j": task_j,
                    "cosine": float(cosines[i, j]),
                    "baseline": None if baseline is None else float(baseline[i, j]),
                }
            )
    return rows


def _off_diagonal(matrix) -> tuple[float, float, float]:
    """(mean, min, max) over i ≠ j, ignoring NaN (a tensor a task did not change has no direction)."""
    mask = ~torch.eye(matrix.shape[0], dtype=torch.bool) & ~torch.isnan(matrix)
    values = matrix[mask]
    if values.numel() == 0:
        nan = float("nan")
        return nan, nan, nan
    return float(values.mean()), float(values.min()), float(values.max())


def _summary_row(base: dict, scope: str, group: str, matrix, baseline=None) -> dict:
    mean, low, high = _off_diagonal(matrix)
    return {
        **base,
        "scope": scope,
        "group": group,
        "mean_cosine": mean,
        "min_cosine": low,
        "max_cosine": high,
        "baseline_mean": None if baseline is None else wa.mean_off_diagonal(baseline),
    }


def _blocks_figure(ref: BankRef, per_block: dict, path: Path) -> Path:
    labels = list(per_block)
    means = [_off_diagonal(per_block[label])[0] for label in labels]
    fig = figure(figsize=(max(4.0, 0.5 * len(labels) + 2), 3.0))
    axes = fig.subplots()
    axes.plot(range(len(labels)), means, marker="o")
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_ylabel("mean off-diagonal cosine")
    axes.set_title(f"{ref.model.name} · {ref.setup.name} · seed {ref.seed}: cosine per block", fontsize=9)
    return save_figure(fig, path)


def comparison_answer(sequential: float, independent: float) -> str:
    """The one-line answer to "does sequential fine-tuning make task vectors more correlated?"."""
    word = "more" if sequential > independent else "less" if sequential < independent else "as"
    than = "as" if word == "as" else "than"
    return (
        f"sequential task vectors are {word} correlated {than} independent: "
        f"mean off-diagonal cos {sequential:.3f} vs {independent:.3f}"
    )


def run(ctx: AnalysisContext) -> list[Path]:
    rows, summary, comparisons, written = [], [], [], []
    grams_of: dict[tuple[str, ...], wa.Grams] = {}
    table = Table(title="Task-vector geometry: off-diagonal cosine, mean \\[min, max] (float64)")
    for column, justify in (
        ("setup", "left"),
        ("mode", "left"),
        ("T", "right"),
        ("whole", "right"),
        ("increments", "right"),
        ("√(s/t)", "right"),
        ("per block, embed → head", "left"),
    ):
        table.add_column(column, justify=justify)
    for ref in ctx.refs:
        base = ref.identity(ctx.spec.name)
        grams = grams_of[ref.key] = wa.gram_matrices(ctx.bank(ref.model, ref.jobs))
        sequential = ref.setup.finetune.mode == "sequential"
        cosines = wa.cosine_from_gram(grams.whole)
        baseline = wa.sqrt_ratio_baseline(len(ref.jobs)) if sequential else None
        rows += _pair_rows(base, "whole", "", ref.tasks, cosines, baseline)
        summary.append(_summary_row(base, "whole", "", cosines, baseline))
        per_block = {label: wa.cosine_from_gram(gram) for label, gram in grams.per_group.items()}
        for label, matrix in per_block.items():
            rows += _pair_rows(base, "block", label, ref.tasks, matrix)
            summary.append(_summary_row(base, "block", label, matrix))
        for name, gram in grams.per_tensor.items():
            rows += _pair_rows(base, "tensor", name, ref.tasks, wa.cosine_from_gram(gram))
        written.append(
            plot_cosine_heatmap(
                cosines,
                ref.tasks,
                ctx.out / f"{NAME}-{ref.label}.png",
                f"cos(τi, τj) · {ref.model.name} · {ref.setup.name} · seed {ref.seed}",
            )
        )
        written.append(_blocks_figure(ref, per_block, ctx.out / f"{NAME}-{ref.label}-blocks.png"))
        increments_text = baseline_text = "–"
        if sequential:
            increments = wa.cosine_from_gram(wa.increment_gram(grams.whole))
            rows += _pair_rows(base, "increment", "", ref.tasks, increments)
            summary.append(_summary_row(base, "increment", "", increments))
            written.append(
                plot_cosine_heatmap(
                    increments,
                    ref.tasks,
                    ctx.out / f"{NAME}-{ref.label}-increments.png",
                    f"cos(θs − θs−1, θt − θt−1) · {ref.setup.name} · seed {ref.seed}",
                )
            )
            increments_text = _fmt(*_off_diagonal(increments))
            baseline_text = f"{wa.mean_off_diagonal(baseline):.3f}"
        blocks = " ".join(f"{_off_diagonal(m)[0]:.2f}" for m in per_block.values())
        table.add_row(
            ctx.row_label(ref),
            ref.setup.finetune.mode,
            str(len(ref.jobs)),
            _fmt(*_off_diagonal(cosines)),
            increments_text,
            baseline_text,
            blocks,
        )

    seen, notes = set(), []
    for ref in ctx.refs:
        twin = twin_jobs(ref, ctx.storage)
        if ref.setup.kind == "cil" and ref.setup.finetune.mode == "sequential" and twin is None:
            notes.append(
                f"{ref.setup.name} (seed {ref.seed}): no independent fine-tuning of the same CIL setup in the "
                "root; add a setup with finetune.mode: independent (same dataset, splits, data, recipe) "
                "and run it to compare"
            )
        if twin is None:
            continue
        pair = frozenset({ref.key, tuple(job.key for job in twin)})
        if pair in seen:
            continue
        seen.add(pair)
        comparisons.append(_compare(ctx, ref, twin, grams_of))

    ctx.console.print(table)
    for row in comparisons:
        ctx.console.print(
            f"[bold]{row['sequential_setup']} vs {row['independent_setup']} (seed {row['seed']}):[/] "
            f"{row['answer']} (√(s/t) baseline {row['baseline_mean']:.3f}; "
            f"increments θs − θs−1 {row['mean_increment_cosine']:.3f})"
        )
    for note in notes:
        ctx.console.print(note, style="yellow", highlight=False)
    written.append(write_table(rows, ctx.out / f"{NAME}.parquet"))
    written.append(write_table(summary, ctx.out / f"{NAME}_summary.parquet"))
    comparison_path = ctx.out / f"{NAME}_comparison.parquet"
    if comparisons:
        written.append(write_table(comparisons, comparison_path))
    elif comparison_path.exists():  # an earlier call's answer must not outlive the experts it described
        comparison_path.unlink()
    return written


def _compare(ctx: AnalysisContext, ref: BankRef, twin, grams_of: dict) -> dict:
    """Sequential vs independent fine-tuning of one CIL setup (whichever of the two ``ref`` is)."""
    twin_key = tuple(job.key for job in twin)
    if twin_key not in grams_of:
        grams_of[twin_key] = wa.gram_matrices(ctx.bank(ref.model, twin))
    if ref.setup.finetune.mode == "sequential":
        seq_key, ind_key, seq_name, ind_name = ref.key, twin_key, ref.setup.name, twin[0].setup
    else:
        seq_key, ind_key, seq_name, ind_name = twin_key, ref.key, twin[0].setup, ref.setup.name
    seq_mean = wa.mean_off_diagonal(wa.cosine_from_gram(grams_of[seq_key].whole))
    ind_mean = wa.mean_off_diagonal(wa.cosine_from_gram(grams_of[ind_key].whole))
    increments = wa.cosine_from_gram(wa.increment_gram(grams_of[seq_key].whole))
    return {
        "run_name": ctx.spec.name,
        "model": ref.model.name,
        "pretrained": ref.jobs[0].pretrained_label,
        "dataset": ref.setup.dataset,
        "n_splits": ref.setup.n_splits,
        "seed": ref.seed,
        "sequential_setup": seq_name,
        "independent_setup": ind_name,
        "mean_cosine_sequential": seq_mean,
        "mean_cosine_independent": ind_mean,
        "mean_increment_cosine": wa.mean_off_diagonal(increments),
        "baseline_mean": wa.mean_off_diagonal(wa.sqrt_ratio_baseline(len(ref.jobs))),
        "sequential_more_correlated": seq_mean > ind_mean,
        "answer": comparison_answer(seq_mean, ind_mean),
    }


def _fmt(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f} [{low:.2f}, {high:.2f}]"
