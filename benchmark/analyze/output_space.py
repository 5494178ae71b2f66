"""Weight space vs output space (docs/METHODS.md §4; Wang et al., "Rethinking Weight-Averaged Model-merging",
arXiv 2411.09263).

A uniform soup θ0 + (1/n) Σ τt averages in weight space; an ensemble averages the n experts'
outputs. If the soup tracks the ensembles as n grows, averaging weights behaves like averaging
outputs; where it falls away, merging loses what the experts know. Experts enter in the setup's
fixed order (n = 1 is the first expert alone, so the soup and every ensemble are that expert).

The reference is the logit ensemble (mean of the experts' logits). Two ensembles that can disagree
with it are compared too: the mean of the softmax probabilities (a confident member counts for at
most 1, not for its logit margin) and the mean of the *unnormalised* image features read through
the shared head (a member counts by its feature norm). Averaging the L2-normalised features instead
would add nothing: with one shared linear head, the mean of normalised features gives exactly the
mean logits up to a per-example positive factor, so its predictions are the logit ensemble's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table

from benchmark.analyze import predict
from benchmark.analyze.context import AnalysisContext, BankRef
from benchmark.analyze.output import figure, save_figure, write_table
from benchmark.experts import store as expert_store
from benchmark.report.paired import mcnemar_exact

NAME = "output_space"
REFERENCE = "logit_ensemble"
METHODS = ("soup", "logit_ensemble", "prob_ensemble", "feature_ensemble")
#: How figures and tables name each method (the Parquet tables keep the identifiers above).
LABELS = {
    "soup": "uniform soup",
    "logit_ensemble": "logit ensemble (reference)",
    "prob_ensemble": "probability ensemble",
    "feature_ensemble": "raw-feature ensemble",
}
SHORT = {"soup": "soup", "logit_ensemble": "logit", "prob_ensemble": "prob.", "feature_ensemble": "raw feat."}
PAIRS = (
    ("soup", "logit_ensemble"),
    ("soup", "prob_ensemble"),
    ("soup", "feature_ensemble"),
    ("logit_ensemble", "prob_ensemble"),
    ("logit_ensemble", "feature_ensemble"),
)


class Ensembles:
    """Running sums of n experts' outputs on one test set, and the ensembles' scores from them.

    Every score is on the logit scale (its argmax is the prediction): the mean logits, the log of
    the mean probabilities, and the head applied to the mean raw feature (normalised afterwards,
    as the classifier normalises any feature — a rescaling that does not move the argmax).
    """

    def __init__(self, head: torch.Tensor, scale: torch.Tensor):
        self.head, self.scale = head.cpu().float(), scale
        self.n = 0
        self.logits = self.probs = self.features = 0.0

    def add(self, raw_features: torch.Tensor) -> None:
        logits = self.scale * F.normalize(raw_features, dim=-1) @ self.head.T
        self.n += 1
        self.logits = self.logits + logits
        self.probs = self.probs + torch.softmax(logits.double(), dim=-1)
        self.features = self.features + raw_features

    def scores(self) -> dict[str, torch.Tensor]:
        return {
            "logit_ensemble": self.logits / self.n,
            "prob_ensemble": (self.probs / self.n).log().float(),
            "feature_ensemble": self.scale * F.normalize(self.features / self.n, dim=-1) @ self.head.T,
        }


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
        ensembles = {task: Ensembles(heads[task], predict.logit_scale(model)) for task in tasks}
        vector_sum = torch.zeros(bank.num_params, dtype=torch.float64)  # Σ τt of the soup, one P-vector
        for n in range(1, len(experts) + 1):
            expert = experts[n - 1]
            model.visual.load_state_dict(expert_store.load_expert(ref.jobs[expert], ctx.storage))
            for task in tasks:
                ensembles[task].add(predict.image_features(model, tests[task][0], normalize=False))
            vector_sum += bank.data[expert]
            assets.load_merged(bank.unflatten((vector_sum / n).to(bank.data.dtype)))
            members = ",".join(ref.tasks[i] for i in experts[:n])
            for task in tasks:
                images, labels = tests[task]
                logits = {
                    "soup": predict.head_logits(model, heads[task], predict.image_features(model, images)),
                    **ensembles[task].scores(),
                }
                common = {**base, "eval_task": task, "n_models": n, "models": members}
                for method in METHODS:
                    acc, correct = predict.accuracy(logits[method], labels)
                    accuracy_rows.append(
                        {**common, "method": method, "accuracy": acc, "n_correct": correct, "n_examples": len(labels)}
                    )
                outcomes = {method: (logits[method].argmax(dim=-1) == labels).numpy() for method in METHODS}
                for first, second in PAIRS:
                    # the grid's paired test (benchmark.report.paired) on the same kind of per-example outcomes
                    test = mcnemar_exact(outcomes[first], outcomes[second])
                    agreement_rows.append(
                        {
                            **common,
                            "method_a": first,
                            "method_b": second,
                            "agreement": predict.agreement(logits[first], logits[second]),
                            "only_a_correct": test["only_a"],
                            "only_b_correct": test["only_b"],
                            "mcnemar_p": test["p_value"],
                        }
                    )
    return accuracy_rows, agreement_rows


def _mean_by(rows: list[dict], key: str, value: str) -> dict:
    """Mean of ``value`` over eval tasks per (n_models, rows[key])."""
    sums: dict[tuple, list[float]] = {}
    for row in rows:
        sums.setdefault((row["n_models"], row[key]), []).append(row[value])
    return {group: sum(values) / len(values) for group, values in sums.items()}


def _pair_label(first: str, second: str) -> str:
    return f"{LABELS[first]} ↔ {LABELS[second]}"


def plot(ref: BankRef, accuracy_rows: list[dict], agreement_rows: list[dict]):
    """The figure (accuracy per method, agreement per pair, over n), legends in :data:`LABELS`."""
    accuracy = _mean_by(accuracy_rows, "method", "accuracy")
    agree = _mean_by([dict(r, pair=(r["method_a"], r["method_b"])) for r in agreement_rows], "pair", "agreement")
    sizes = sorted({n for n, _ in accuracy})
    fig = figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for method in METHODS:
        left.plot(sizes, [accuracy[n, method] for n in sizes], marker="o", label=LABELS[method])
    left.set_xlabel("number of experts n")
    left.set_ylabel("accuracy (mean over eval tasks)")
    left.legend(fontsize=8)
    for pair in PAIRS:
        right.plot(sizes, [agree[n, pair] for n in sizes], marker="o", label=_pair_label(*pair))
    right.set_xlabel("number of experts n")
    right.set_ylabel("prediction agreement")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=7)
    for axes in (left, right):
        axes.set_xticks(sizes)
    fig.suptitle(f"weight vs output space · {ref.model.name} · {ref.setup.name} · seed {ref.seed}", fontsize=10)
    return fig


def summary_table(title: str, accuracy_rows: list[dict], agreement_rows: list[dict]) -> Table:
    """The rich summary: accuracy per method and agreement per pair, mean over eval tasks, per n."""
    mean_acc = _mean_by(accuracy_rows, "method", "accuracy")
    mean_agree = _mean_by([dict(r, pair=(r["method_a"], r["method_b"])) for r in agreement_rows], "pair", "agreement")
    table = Table(title=title)
    for column in ("n", *(LABELS[m] for m in METHODS), *(f"agree {SHORT[a]}/{SHORT[b]}" for a, b in PAIRS)):
        table.add_column(column, justify="right")
    for n in sorted({n for n, _ in mean_acc}):
        table.add_row(str(n), *(f"{mean_acc[n, m]:.3f}" for m in METHODS), *(f"{mean_agree[n, p]:.3f}" for p in PAIRS))
    return table


def run(ctx: AnalysisContext) -> list[Path]:
    accuracy_rows, agreement_rows, written = [], [], []
    for ref in ctx.refs:
        accuracies, agreements = _measure(ctx, ref)
        accuracy_rows += accuracies
        agreement_rows += agreements
        written.append(save_figure(plot(ref, accuracies, agreements), ctx.out / f"{NAME}-{ref.label}.png"))
        ctx.console.print(
            summary_table(
                f"Weight vs output space · {ctx.row_label(ref)} (mean over eval tasks)", accuracies, agreements
            )
        )
    written.append(write_table(accuracy_rows, ctx.out / f"{NAME}.parquet"))
    written.append(write_table(agreement_rows, ctx.out / f"{NAME}_agreement.parquet"))
    return written
