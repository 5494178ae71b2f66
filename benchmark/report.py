"""Leaderboards rendered with rich from the Parquet dataset (the single source of truth).

Aggregation order, stated in the output because it changes numbers: per trial, mean over eval
tasks (normalised accuracy = per-task merged ÷ expert, then mean); then mean ± std over seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pyarrow as pa
from rich.console import Console
from rich.table import Table

GROUP = ("model", "setup", "merger", "pooling", "collaborative")
AGGREGATION = "per trial: mean over eval tasks (normalised = merged/expert per task, then mean); then mean ± std over seeds"


def _variant(collaborative) -> str:
    return "-" if collaborative is None else ("A*" if collaborative else "A")


def _per_trial(table: pa.Table) -> list[dict]:
    """One entry per finished trial and seed: task-mean accuracy and normalised accuracy.

    Oracle trials hold one row per (λ, task); the oracle entry is the λ whose task-mean accuracy is
    best on the test sets — the privileged reference the paper compares weaving against.
    """
    per_lam: dict[tuple, dict] = {}
    for row in table.to_pylist():
        if row["status"] != "ok":
            continue
        lam_key = row["lam"] if row["lambda_policy"] == "oracle" else None
        entry = per_lam.setdefault(
            (row["trial_key"], row["seed"], lam_key),
            {"group": tuple(row[c] for c in GROUP), "acc": [], "norm": [], "lam": row["lam"],
             "lambdas": row["lambdas"], "policy": row["lambda_policy"], "key": (row["trial_key"], row["seed"])},
        )
        entry["acc"].append(row["accuracy"])
        if row["normalized_accuracy"] is not None:
            entry["norm"].append(row["normalized_accuracy"])
    best: dict[tuple, dict] = {}
    for entry in per_lam.values():
        entry["mean_acc"] = _mean(entry["acc"])
        entry["mean_norm"] = _mean(entry["norm"]) if entry["norm"] else float("nan")
        current = best.get(entry["key"])
        if current is None or entry["mean_acc"] > current["mean_acc"]:
            best[entry["key"]] = entry
    return list(best.values())


def leaderboard_rows(table: pa.Table) -> list[dict]:
    """One dict per (model, setup, merger, pooling, variant), sorted best first within each setup."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for entry in _per_trial(table):
        groups[entry["group"]].append(entry)
    out = []
    for group, entries in groups.items():
        accs = [e["mean_acc"] for e in entries]
        norms = [e["mean_norm"] for e in entries if not math.isnan(e["mean_norm"])]
        out.append(
            {
                **dict(zip(GROUP, group)),
                "variant": _variant(group[-1]),
                "lambda": _lambda_text(entries[0]),
                "uses_test_data": entries[0]["policy"] == "oracle",
                "n_seeds": len(entries),
                "accuracy": _mean(accs),
                "accuracy_std": _std(accs),
                "normalized": _mean(norms) if norms else float("nan"),
            }
        )
    out.sort(key=lambda r: (r["model"], r["setup"], -r["accuracy"]))
    return out


def _lambda_text(entry: dict) -> str:
    if entry["policy"] == "reference":
        return "-"
    if entry["policy"] == "oracle":
        return f"oracle λ={entry['lam']:g} (test data)"
    if entry["policy"] == "fixed":
        return f"{entry['lam']:g}"
    lambdas = entry["lambdas"] or []
    return f"{lambdas[0]:g}–{lambdas[-1]:g}·{len(lambdas)}" if lambdas else "weave"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def render_leaderboard(table: pa.Table, console: Console | None = None, title: str = "Leaderboard") -> list[dict]:
    console = console or Console()
    rows = leaderboard_rows(table)
    if not rows:
        console.print("[yellow]no finished trials in this root yet[/]")
        return rows
    errors = sum(1 for s in table.column("status").to_pylist() if s != "ok")
    for (model, setup) in dict.fromkeys((r["model"], r["setup"]) for r in rows):
        out = Table(title=f"{title}: {model} / {setup}", caption=AGGREGATION, caption_justify="left")
        for col, justify in (("merger", "left"), ("pooling", "left"), ("variant", "center"), ("λ", "left"),
                             ("seeds", "right"), ("accuracy %", "right"), ("normalised %", "right")):
            out.add_column(col, justify=justify)
        for r in rows:
            if (r["model"], r["setup"]) != (model, setup):
                continue
            style = "dim" if r["merger"] in ("zeroshot", "expert") else None
            acc = f"{100 * r['accuracy']:.2f}" + (f" ± {100 * r['accuracy_std']:.2f}" if r["n_seeds"] > 1 else "")
            norm = "-" if math.isnan(r["normalized"]) else f"{100 * r['normalized']:.1f}"
            out.add_row(r["merger"], r["pooling"], r["variant"], r["lambda"], str(r["n_seeds"]), acc, norm,
                        style=style)
        console.print(out)
    if errors:
        console.print(f"[red]{errors} error row(s) present; see the 'error' column of the Parquet dataset[/]")
    return rows
