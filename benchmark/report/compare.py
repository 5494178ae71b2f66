"""``run_bench.py report ROOT --compare A B``: is the difference between two configurations real?

A and B are named as the leaderboard names them (``ties/avg/A*``, ``ties/none``, ``ties/oracle``).
Per (model, setup) where both ran: the leaderboard value of each, the paired difference A − B with
its bootstrap interval over test examples (``benchmark.report.paired``: one draw per test split, both
configurations scored on it, aggregated over tasks and seeds as the leaderboard aggregates them),
the spread of the per-seed differences, and an exact McNemar test per eval task and seed.
"""

from __future__ import annotations

import pyarrow as pa

from benchmark.report.formats import Column, ReportTable, Stat
from benchmark.report.leaderboard import ok_rows
from benchmark.report.paired import (
    DEFAULT_LEVEL,
    N_BOOT,
    PairedStats,
    config_label,
    mcnemar_exact,
    parse_config,
    percentile_interval,
    seed_spread,
)
from benchmark.report.tables import MethodCells


def _stat(value: float | None) -> Stat | None:
    return None if value is None else Stat(value)


def compare_tables(
    table: pa.Table, first: str, second: str, metric: str = "accuracy", ci: float = DEFAULT_LEVEL
) -> list[ReportTable]:
    """The paired comparison table and the per-task McNemar table of ``first`` vs ``second``."""
    if not (ci == 0 or 0 < ci < 100):
        raise ValueError(f"--ci {ci:g}: give a confidence level in (0, 100), e.g. 95, or 0 to hide intervals")
    stats = PairedStats(ok_rows(table))
    available = stats.configurations()
    merger_a, config_a = parse_config(first, available)
    merger_b, config_b = parse_config(second, available)
    name_a, name_b = config_label(merger_a, config_a), config_label(merger_b, config_b)
    blocks = stats.blocks(merger_a, config_a, merger_b, config_b)
    if not blocks:
        raise ValueError(
            f"--compare: {name_a} and {name_b} never ran on the same model and setup; compare configurations of one run"
        )
    label = "accuracy" if metric == "accuracy" else "normalised"
    columns = [
        Column("model", "text", "model"),
        Column("setup", "text", "setup"),
        Column(f"{name_a} {label} %", "pct", "a"),
        Column(f"{name_b} {label} %", "pct", "b"),
        Column("A - B", "gain", "difference"),
    ]
    if ci:
        columns.append(Column(f"A - B {ci:g}% CI", "ci", "difference_ci"))
    columns += [Column("seeds", "int", "n_seeds"), Column("per-seed A - B", "text", "seed_spread")]
    rows, tests, notes = [], [], []
    missing = False
    values = MethodCells(table, metric, ci=0).values  # the leaderboard's point values, bits or not
    for model, setup in blocks:
        seeds_a = stats.seed_samples(model, setup, merger_a, config_a, metric)
        seeds_b = stats.seed_samples(model, setup, merger_b, config_b, metric)
        if seeds_a is None or seeds_b is None:
            missing = True
            a, b = values[(model, setup, merger_a)].get(config_a), values[(model, setup, merger_b)].get(config_b)
            known = a is not None and b is not None
            rows.append(
                [model, setup, _stat(a), _stat(b), a - b if known else None, *([None] if ci else []), None, "-"]
            )
            continue
        a, b = sum(seeds_a.values()) / len(seeds_a), sum(seeds_b.values()) / len(seeds_b)
        row = [model, setup, Stat(float(a[0])), Stat(float(b[0])), float(a[0] - b[0])]
        if ci:
            row.append(percentile_interval((a - b)[1:], ci))
        common = sorted(set(seeds_a) & set(seeds_b))
        row += [len(common), seed_spread([float(seeds_a[s][0] - seeds_b[s][0]) for s in common])]
        rows.append(row)
        bits_a = stats.observed_bits(model, setup, merger_a, config_a)
        bits_b = stats.observed_bits(model, setup, merger_b, config_b)
        for seed, task in sorted(set(bits_a) & set(bits_b)):
            result = mcnemar_exact(bits_a[(seed, task)], bits_b[(seed, task)])
            tests.append(
                [
                    model,
                    setup,
                    seed,
                    task,
                    len(bits_a[(seed, task)]),
                    result["only_a"],
                    result["only_b"],
                    f"{result['p_value']:.3g}",
                ]
            )
    if missing:
        notes.append(
            "'-': some trials have no per-example results (written before results schema 2); re-run them "
            "for paired statistics"
        )
    caption = (
        f"{label} %; A = {name_a}, B = {name_b}; per (model, setup) the leaderboard value (per trial: mean over "
        "eval tasks; per seed: mean over pooled trials; mean over seeds)"
    )
    if ci:
        caption += (
            f"; CI: {ci:g} % percentile interval of A - B over {N_BOOT} bootstrap replicates of the test "
            "examples, one draw per test split shared by A and B, aggregated as the leaderboard (seeds held "
            "fixed; an oracle's λ re-chosen per replicate); per-seed A - B: mean ± std over seeds"
        )
    comparison = ReportTable("compare", f"Paired comparison: {name_a} vs {name_b}", columns, rows, caption, notes)
    out = [comparison]
    if tests:
        test_columns = [
            Column("model", "text", "model"),
            Column("setup", "text", "setup"),
            Column("seed", "int", "seed"),
            Column("eval task", "text", "eval_task"),
            Column("n", "int", "n_examples"),
            Column("only A right", "int", "only_a"),
            Column("only B right", "int", "only_b"),
            Column("McNemar p", "text", "p_value"),
        ]
        out.append(
            ReportTable(
                "mcnemar",
                f"Exact McNemar test per task: {name_a} vs {name_b}",
                test_columns,
                tests,
                "two-sided exact binomial test on the examples exactly one of A and B gets right "
                "(an oracle at its best λ on the data); one test per eval task and seed, not "
                "corrected for multiplicity",
            )
        )
    return out
