"""Figures of the paper as PNG files (matplotlib, Agg canvas, no pyplot state).

- accuracy vs λ per merger and setup from the oracle sweep, with each weaving result, the fixed-λ
  baseline and the zero-shot model drawn over it: where weaving lands relative to the whole λ curve
  is the paper's argument that it removes the choice of λ without test data;
- the best λ per task (the motivation figure): a single global λ is a compromise, and how spread the
  per-task optima are tells how much a fixed λ loses;
- cosine heatmaps of task vectors, for the analyses (docs/METHODS.md §4), which compute the matrices.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas rather than
pyplot, so nothing global changes for other code in the process (Ray workers, tests), and are
written temp-then-rename like every other artifact.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark.report.tables import best_lambda_per_task, lambda_curves, weaving_levels
from benchmark.results.storage import atomic_write, safe_name

DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def plot_lambda_curves(table: pa.Table, out_dir: Path, metric: str = "accuracy") -> list[Path]:
    """One PNG per (model, setup), one panel per merger: the task-mean curve over λ (bold), the
    per-task curves (thin), the oracle's best λ (star), and horizontal lines for every weaving
    configuration; the fixed-λ baseline is a cross on its λ, the zero-shot model a dotted line."""
    curves = lambda_curves(table, metric)
    levels = weaving_levels(table)
    field = "accuracy" if metric == "accuracy" else "normalized"
    by_setup: dict[tuple, list[str]] = {}
    for model, setup, merger in curves:
        by_setup.setdefault((model, setup), []).append(merger)
    paths = []
    for (model, setup), mergers in by_setup.items():
        rows, cols = _grid(len(mergers))
        fig = Figure(figsize=(5.2 * cols, 3.8 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, merger in zip(axes.flat, mergers):
            curve = curves[(model, setup, merger)]
            lams = curve["lams"]
            if len(curve["tasks"]) > 1:
                for task, values in curve["tasks"].items():
                    ax.plot(lams, [100 * v for v in values], color="0.6", linewidth=0.8, alpha=0.6)
            mean = [100 * v for v in curve["mean"]]
            ax.plot(lams, mean, color="black", linewidth=2.0, marker="o", markersize=3, label="λ·M (oracle sweep)")
            best = int(np.nanargmax(mean))
            ax.plot(
                [lams[best]],
                [mean[best]],
                marker="*",
                markersize=14,
                color="gold",
                markeredgecolor="black",
                linestyle="none",
                label=f"oracle λ={lams[best]:g} (test data)",
            )
            colours = iter(
                ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
            )
            for r in levels.get((model, setup, merger), []):
                value = 100 * r[field]
                if math.isnan(value):
                    continue
                if r["kind"] == "zeroshot":
                    ax.axhline(value, color="0.4", linestyle=":", linewidth=1.2, label=f"zero-shot {value:.1f}")
                elif r["lambda_policy"] == "fixed":
                    for lam in r["lams"]:
                        ax.plot(
                            [lam],
                            [value],
                            marker="X",
                            markersize=9,
                            color="tab:red",
                            linestyle="none",
                            label=f"fixed λ={lam:g} {value:.1f}",
                        )
                else:
                    ax.axhline(
                        value,
                        color=next(colours, "tab:gray"),
                        linestyle="--",
                        linewidth=1.4,
                        label=f"weave {r['pooling']} {r['variant']} {value:.1f}",
                    )
            ax.set_title(merger)
            ax.set_xlabel("λ")
            ax.set_ylabel(f"{'accuracy' if metric == 'accuracy' else 'normalised accuracy'} %")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(mergers) :]:
            ax.set_visible(False)
        fig.suptitle(f"{model} / {setup}: accuracy vs λ (thin: per eval task; mean over seeds)")
        paths.append(_save(fig, Path(out_dir) / f"lambda_curves_{safe_name(model)}_{safe_name(setup)}.png"))
    return paths


def plot_best_lambda(table: pa.Table, out_dir: Path) -> list[Path]:
    """One PNG per model, one panel per setup: for every merger the λ that maximises each eval
    task's own accuracy in the oracle sweep (points) and their spread (box)."""
    entries = best_lambda_per_task(table)
    by_model: dict[str, dict[str, dict[str, list[float]]]] = {}
    for e in entries:
        by_model.setdefault(e["model"], {}).setdefault(e["setup"], {}).setdefault(e["merger"], []).append(e["lam"])
    paths = []
    for model, setups in by_model.items():
        rows, cols = _grid(len(setups))
        fig = Figure(
            figsize=(max(4.5, 1.3 * max(len(m) for m in setups.values()) + 2) * cols, 3.8 * rows), layout="constrained"
        )
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, (setup, mergers) in zip(axes.flat, setups.items()):
            names = list(mergers)
            ax.boxplot([mergers[m] for m in names], widths=0.5, showfliers=False)
            for i, name in enumerate(names, start=1):
                values = mergers[name]
                # deterministic spread so equal λ stay visible side by side
                offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
                ax.scatter([i + o for o in offsets], values, s=22, zorder=3, color="tab:blue", alpha=0.8)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
            ax.set_ylabel("best λ of each eval task")
            ax.set_title(setup)
            ax.grid(alpha=0.3, axis="y")
        for ax in list(axes.flat)[len(setups) :]:
            ax.set_visible(False)
        fig.suptitle(f"{model}: per-task best λ in the oracle sweep (test data; mean over seeds)")
        paths.append(_save(fig, Path(out_dir) / f"best_lambda_{safe_name(model)}.png"))
    return paths


def plot_cosine_heatmap(
    matrix, labels: Sequence[str], path: Path, title: str, vmin: float = -1.0, vmax: float = 1.0
) -> Path:
    """A square similarity matrix (e.g. pairwise cosine of task vectors) as an annotated heatmap.

    The colour range is fixed to [-1, 1] by default so heatmaps of different setups compare by eye;
    values are printed in the cells while they stay legible (≤ 16 labels).
    """
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"cosine heatmap needs a square matrix; got shape {values.shape}")
    if len(labels) != values.shape[0]:
        raise ValueError(f"cosine heatmap: {len(labels)} labels for a {values.shape[0]}×{values.shape[0]} matrix")
    n = values.shape[0]
    size = max(4.0, 0.55 * n + 2.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if np.isfinite(values[i, j]):
                    dark = abs(values[i, j]) > 0.6 * max(abs(vmin), abs(vmax))
                    ax.text(
                        j,
                        i,
                        f"{values[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine")
    ax.set_title(title)
    return _save(fig, Path(path))


def write_figures(table: pa.Table, out_dir: Path, metric: str = "accuracy") -> tuple[list[Path], list[str]]:
    """Every figure the results support, and a note for each one they do not."""
    paths = plot_lambda_curves(table, Path(out_dir), metric) + plot_best_lambda(table, Path(out_dir))
    if paths:
        return paths, []
    return [], [
        "no λ-curve or best-λ figures: this root has no finished oracle sweep (add 'oracle' to the spec's poolings)"
    ]
