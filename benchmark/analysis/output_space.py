"""Weight space vs output space (METHODS §4; Wang et al., "Rethinking Weight-Averaged Model-merging",
arXiv 2411.09263).

A uniform soup θ0 + (1/n) Σ τt averages in weight space; a logit ensemble averages the n experts'
logits; a feature ensemble averages their normalised features and reads them through the shared
frozen head. If the soup tracks the ensembles as n grows, averaging weights behaves like averaging
outputs; where it falls away, merging loses what the experts know. Experts enter in the setup's
fixed order (n = 1 is the first expert alone, so the soup and both ensembles are that expert).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table

from benchmark import expert_store
from benchmark.analysis import predict
from benchmark.analysis.context import AnalysisContext, BankRef
from benchmark.analysis.output import figure, save_figure, write_table

NAME = "output_space"
METHODS = ("soup", "logit_ensemble", "feature_ensemble")
PAIRS = (("soup", "logit_ensemble"), ("soup", "feature_ensemble"), ("logit_ensemble", "feature_ensemble"))


def _groups(ref: BankRef) -> dict[tuple[int, ...], list[str]]:
    """Evaluations grouped by the experts they merge (MTL/CIL: all; DG: all but the held-out domain)."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for evaluation in ref.setup.evaluations():
        groups.setdefault(evaluation.experts, []).append(evaluation.task)
    return groups


def _measure(ctx: AnalysisContext, ref: BankRef) -> tuple[list[dict], list[dict]]:
    assets = ctx.warm(ref.model)
    bank = ctx.bank(ref.model, ref.jobs)
    model = assets.base.model
    base = ref.identity(ctx.spec.name)
    accuracy_rows, agreement_rows = [], []
    for experts, tasks in _groups(ref).items():
        tests = {task: ctx.test_split(ref.model, task, ref.setup) for task in tasks}
        heads = {task: ctx.head(ref.model, task) for task in tasks}
        logit_sum = {task: 0.0 for task in tasks}
        feature_sum = {task: 0.0 for task in tasks}
        vector_sum = torch.zeros(bank.num_params, dtype=torch.float64)  # Σ τt of the soup, one P-vector
        for n in range(1, len(experts) + 1):
            expert = experts[n - 1]
            model.visual.load_state_dict(expert_store.load_expert(ref.jobs[expert], ctx.storage))
            for task in tasks:
                features = predict.image_features(model, tests[task][0])
                logit_sum[task] = logit_sum[task] + predict.head_logits(model, heads[task], features)
                feature_sum[task] = feature_sum[task] + features
            vector_sum += bank.data[expert]
            assets.load_merged(bank.unflatten((vector_sum / n).to(bank.data.dtype)))
            members = ",".join(ref.tasks[i] for i in experts[:n])
            for task in tasks:
                images, labels = tests[task]
                logits = {
                    "soup": predict.head_logits(model, heads[task], predict.image_features(model, images)),
                    "logit_ensemble": logit_sum[task] / n,
                    "feature_ensemble": predict.head_logits(model, heads[task], F.normalize(feature_sum[task] / n, dim=-1)),
                }
                common = {**base, "eval_task": task, "n_models": n, "models": members}
                for method in METHODS:
                    acc, correct = predict.accuracy(logits[method], labels)
                    accuracy_rows.append({**common, "method": method, "accuracy": acc, "n_correct": correct,
                                          "n_examples": len(labels)})
                for first, second in PAIRS:
                    agreement_rows.append({**common, "method_a": first, "method_b": second,
                                           "agreement": predict.agreement(logits[first], logits[second])})
    return accuracy_rows, agreement_rows


def _mean_by(rows: list[dict], key: str, value: str) -> dict:
    """Mean of ``value`` over eval tasks per (n_models, rows[key])."""
    sums: dict[tuple, list[float]] = {}
    for row in rows:
        sums.setdefault((row["n_models"], row[key]), []).append(row[value])
    return {group: sum(values) / len(values) for group, values in sums.items()}


def _figure(ref: BankRef, accuracy_rows: list[dict], agreement_rows: list[dict], path: Path) -> Path:
    accuracy = _mean_by(accuracy_rows, "method", "accuracy")
    for row in agreement_rows:
        row["pair"] = f"{row['method_a']} ↔ {row['method_b']}"
    agree = _mean_by(agreement_rows, "pair", "agreement")
    sizes = sorted({n for n, _ in accuracy})
    fig = figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for method in METHODS:
        left.plot(sizes, [accuracy[n, method] for n in sizes], marker="o", label=method.replace("_", " "))
    left.set_xlabel("number of experts n")
    left.set_ylabel("accuracy (mean over eval tasks)")
    left.legend(fontsize=8)
    for pair in dict.fromkeys(p for _, p in agree):
        right.plot(sizes, [agree[n, pair] for n in sizes], marker="o", label=pair.replace("_", " "))
    right.set_xlabel("number of experts n")
    right.set_ylabel("prediction agreement")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=8)
    for axes in (left, right):
        axes.set_xticks(sizes)
    fig.suptitle(f"weight vs output space · {ref.model.name} · {ref.setup.name} · seed {ref.seed}", fontsize=10)
    return save_figure(fig, path)


def run(ctx: AnalysisContext) -> list[Path]:
    accuracy_rows, agreement_rows, written = [], [], []
    for ref in ctx.refs:
        accuracies, agreements = _measure(ctx, ref)
        accuracy_rows += accuracies
        agreement_rows += agreements
        written.append(_figure(ref, accuracies, [dict(r) for r in agreements], ctx.out / f"{NAME}-{ref.label}.png"))
        mean_acc = _mean_by(accuracies, "method", "accuracy")
        mean_agree = _mean_by([dict(r, pair=(r["method_a"], r["method_b"])) for r in agreements], "pair", "agreement")
        table = Table(title=f"Weight vs output space · {ctx.row_label(ref)} (mean over eval tasks)")
        for column in ("n", "soup", "logit ens.", "feature ens.", "agree soup/logit", "agree soup/feat.",
                       "agree logit/feat."):
            table.add_column(column, justify="right")
        for n in sorted({n for n, _ in mean_acc}):
            table.add_row(str(n), *(f"{mean_acc[n, m]:.3f}" for m in METHODS), *(f"{mean_agree[n, p]:.3f}" for p in PAIRS))
        ctx.console.print(table)
    written.append(write_table(accuracy_rows, ctx.out / f"{NAME}.parquet"))
    written.append(write_table(agreement_rows, ctx.out / f"{NAME}_agreement.parquet"))
    return written
