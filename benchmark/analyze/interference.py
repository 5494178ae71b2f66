"""Interference between task vectors (docs/METHODS.md §4): where mergers have to arbitrate.

Three views, each computed with the rule of the merger it explains (`ww.analysis`): sign conflicts
among each task's top-k entries (what TIES's sign election resolves), the share of entries each
task supplies under MagMax and randmix (does one task dominate the largest magnitudes?), and the
consensus histogram (entries used by 0, 1, ≥ 2 tasks' TALL masks: what Consensus Merging zeroes).
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

import ww.analysis as wa
from benchmark.analyze.context import AnalysisContext, BankRef
from benchmark.analyze.output import figure, save_figure, write_table

NAME = "interference"
TOP_K = 0.2  # TIES's default trimming fraction (docs/METHODS.md §2)
TALL_LAMBDA = 0.4  # Consensus Merging's data-free λ (docs/METHODS.md §2)


def _rows(
    base: dict,
    conflicts: wa.SignConflicts,
    shares: wa.SelectionShares,
    histogram: wa.ConsensusHistogram,
    num_params: int,
) -> list[dict]:
    params = {"k": conflicts.k, "tall_lambda": histogram.tall_lambda, "randmix_seed": shares.seed}
    tasks = list(conflicts.task_names)

    def row(measure: str, value: float, count: int | None, total: int | None, task=None, other=None, users=None):
        return {
            **base,
            **params,
            "measure": measure,
            "task": task,
            "other_task": other,
            "users": users,
            "value": float(value),
            "count": count,
            "total": total,
        }

    rows = [
        row("sign_conflict_rate", conflicts.rate, conflicts.conflicting, conflicts.shared),
        row("sign_conflict_rate_of_union", conflicts.rate_of_union, conflicts.conflicting, conflicts.union),
    ]
    rate = conflicts.pairwise_rate
    for i, task in enumerate(tasks):
        for j, other in enumerate(tasks):
            if i != j:
                rows.append(
                    row(
                        "sign_conflict_pair",
                        rate[i, j],
                        int(conflicts.disagree[i, j]),
                        int(conflicts.both[i, j]),
                        task,
                        other,
                    )
                )
    for i, task in enumerate(tasks):
        rows.append(row("magmax_share", shares.magmax_share[i], int(shares.magmax[i]), shares.counted, task))
        rows.append(row("randmix_share", shares.randmix_share[i], int(shares.randmix[i]), shares.counted, task))
        rows.append(
            row(
                "tall_mask_share", int(histogram.per_task[i]) / num_params, int(histogram.per_task[i]), num_params, task
            )
        )
    for users, count in enumerate(histogram.users.tolist()):
        rows.append(row("consensus_users", count / num_params, count, num_params, users=users))
    return rows


def _figure(
    ref: BankRef, conflicts: wa.SignConflicts, shares: wa.SelectionShares, histogram: wa.ConsensusHistogram, path: Path
) -> Path:
    tasks = list(conflicts.task_names)
    count = len(tasks)
    fig = figure(figsize=(14, 4.0), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    image = left.imshow(conflicts.pairwise_rate.numpy(), cmap="Reds", vmin=0.0, vmax=1.0)
    left.set_xticks(range(count), tasks, rotation=45, ha="right", fontsize=7)
    left.set_yticks(range(count), tasks, fontsize=7)
    left.set_title(f"sign conflicts among top-{conflicts.k:g} (pairwise)", fontsize=9)
    fig.colorbar(image, ax=left, fraction=0.046, pad=0.04)
    positions = range(count)
    middle.bar([p - 0.2 for p in positions], shares.magmax_share.tolist(), width=0.4, label="magmax")
    middle.bar(
        [p + 0.2 for p in positions], shares.randmix_share.tolist(), width=0.4, label=f"randmix (seed {shares.seed})"
    )
    middle.axhline(1 / count, color="grey", linestyle="--", linewidth=0.8, label="1/T")
    middle.set_xticks(list(positions), tasks, rotation=45, ha="right", fontsize=7)
    middle.set_ylabel("share of entries")
    middle.legend(fontsize=7)
    middle.set_title("which task an entry comes from", fontsize=9)
    total = max(int(histogram.users.sum()), 1)
    right.bar(range(count + 1), [c / total for c in histogram.users.tolist()])
    right.set_xticks(range(count + 1))
    right.set_xlabel("tasks whose TALL mask uses the entry")
    right.set_ylabel("fraction of entries")
    right.set_title(f"consensus histogram (λ = {histogram.tall_lambda:g})", fontsize=9)
    fig.suptitle(f"{ref.model.name} · {ref.setup.name} · seed {ref.seed}", fontsize=10)
    return save_figure(fig, path)


def run(ctx: AnalysisContext) -> list[Path]:
    rows, written = [], []
    table = Table(
        title=f"Interference: sign conflicts among top-{TOP_K:g}, selection shares, TALL masks (λ = {TALL_LAMBDA:g})"
    )
    for column in (
        "setup",
        "T",
        "conflicts",
        "of union",
        "pairwise",
        "magmax share",
        "randmix share",
        "users 0 / 1 / ≥2",
    ):
        table.add_column(column, justify="left" if column == "setup" else "right")
    for ref in ctx.refs:
        bank = ctx.bank(ref.model, ref.jobs)
        conflicts = wa.sign_conflicts(bank, k=TOP_K)
        shares = wa.selection_shares(bank, seed=ref.seed)
        histogram = wa.consensus_histogram(bank, tall_lambda=TALL_LAMBDA)
        rows += _rows(ref.identity(ctx.spec.name), conflicts, shares, histogram, bank.num_params)
        written.append(_figure(ref, conflicts, shares, histogram, ctx.out / f"{NAME}-{ref.label}.png"))
        total = bank.num_params
        table.add_row(
            ctx.row_label(ref),
            str(len(ref.jobs)),
            f"{conflicts.rate:.3f}",
            f"{conflicts.rate_of_union:.3f}",
            f"{wa.mean_off_diagonal(conflicts.pairwise_rate):.3f}",
            f"{float(shares.magmax_share.min()):.3f}–{float(shares.magmax_share.max()):.3f}",
            f"{float(shares.randmix_share.min()):.3f}–{float(shares.randmix_share.max()):.3f}",
            f"{histogram.unused / total:.2f} / {histogram.selfish / total:.2f} / {histogram.shared / total:.2f}",
        )
    ctx.console.print(table)
    ctx.console.print(
        "conflicts: among entries ≥ 2 tasks keep, the fraction with opposite kept signs (of union: "
        "over entries any task keeps); pairwise: mean over pairs of their intersection's rate; "
        "users: fraction of entries whose TALL masks count 0 / 1 / ≥ 2 tasks",
        style="dim",
    )
    written.append(write_table(rows, ctx.out / f"{NAME}.parquet"))
    return written
