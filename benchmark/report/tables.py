"""The paper's tables (Chaves et al., Weight Weaving, arXiv 2510.13921) and the λ-sweep data behind
its figures, built from the same leaderboard aggregation (``benchmark.report.leaderboard``).

- weaving gain: per base merger, the data-free baseline (pooling ``none``, fixed λ) → each weaving
  configuration (pooling × variant), in points, per setup and overall (the paper's Table 1);
- pooling ablation: rows merger, columns pooling × variant (avg ≈ randmix ≫ magmax in the paper);
- oracle: baseline and one weaving configuration fixed in advance next to the best λ chosen on the
  test sets; every column computed from test-set choices is labelled so in every format.

Per setup a cell is the mean over models of the leaderboard value (itself mean over seeds), taken
only over models that have every configuration the cell compares — so a gain is never a difference
between different sets of models. Overall = mean over setups, as the paper reports its headline.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from typing import Callable

import numpy as np
import pyarrow as pa

from benchmark.report.formats import Column, ReportTable, Stat
from benchmark.report.leaderboard import (
    REFERENCE_MERGERS,
    _mean,
    format_lams,
    leaderboard_rows,
    leaderboard_table,
    mixed_params_note,
    ok_rows,
)
from benchmark.report.paired import DEFAULT_LEVEL, N_BOOT, VARIANT_NAMES, PairedStats, percentile_interval

FIXED = "fixed"
ORACLE = "oracle"
OVERALL = "overall"
METRICS = ("accuracy", "normalized")
POOLING_ORDER = ("avg", "randmix", "magmax")
BEST_ON_TEST = " (best on test data)"
TEST_DATA_NOTE = "Columns marked (test data) choose λ on the test sets: a privileged reference, not a data-free result."
#: The weaving configuration the oracle table compares with, fixed before any result is seen: the
#: paper's (average pooling over A*, the collaborative candidate set).
DEFAULT_WEAVING = ("avg", "A*")


def parse_weaving(text: str | None) -> tuple[str, str]:
    """``"avg,collaborative"`` / ``"randmix,A"`` → (pooling, "A*" | "A"); None → the paper's."""
    if text is None:
        return DEFAULT_WEAVING
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not parts[0] or parts[1].lower() not in VARIANT_NAMES:
        raise ValueError(
            f"--weaving {text!r}: give POOLING,VARIANT with VARIANT collaborative (A*) or plain (A), "
            "e.g. --weaving avg,collaborative"
        )
    if parts[0] in ("none", "oracle"):
        raise ValueError(
            f"--weaving {text!r}: {parts[0]} is not a weaving pooling; give one such as avg, randmix, magmax"
        )
    return parts[0], VARIANT_NAMES[parts[1].lower()]


class MethodCells:
    """(model, setup, merger) → {configuration: leaderboard value}; a configuration is ``"fixed"``,
    ``"oracle"`` or a weaving ``(pooling, variant)``."""

    def __init__(
        self,
        table: pa.Table,
        metric: str = "accuracy",
        ci: float = DEFAULT_LEVEL,
        stats: Callable[[], PairedStats] | None = None,
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if not (ci == 0 or 0 < ci < 100):
            raise ValueError(f"--ci {ci:g}: give a confidence level in (0, 100), e.g. 95, or 0 to hide intervals")
        self.metric = metric
        self.ci = ci
        self._stats: PairedStats | None = None
        self._stats_source = stats or (lambda: PairedStats(ok_rows(table)))
        self.no_bits = False  # some interval could not be computed: trials without per-example results
        self.values: dict[tuple, dict] = defaultdict(dict)
        self.lams: dict[tuple, dict] = defaultdict(dict)
        mixed = set()
        for r in leaderboard_rows(table, ("model", "setup", "merger", "pooling", "variant")):
            if r["kind"] in REFERENCE_MERGERS or math.isnan(r[metric]):
                continue
            config = {"fixed": FIXED, "oracle": ORACLE, "weave": (r["pooling"], r["variant"])}.get(r["lambda_policy"])
            if config is None:
                continue
            if r["mixed_params"]:
                mixed.add(r["merger"])
            self.values[(r["model"], r["setup"], r["merger"])][config] = r[metric]
            self.lams[(r["model"], r["setup"], r["merger"])][config] = r["lams"]
        self.setups = sorted({s for _, s, _ in self.values})
        self.mergers = sorted({m for _, _, m in self.values})
        fix = "these tables need one configuration per merger (report the others from a separate root)"
        self.notes = [mixed_params_note(sorted(mixed), fix)] if mixed else []

    def configs(self, merger: str) -> set:
        return {c for (_, _, m), cs in self.values.items() if m == merger for c in cs}

    def weavings(self, merger: str | None = None) -> list[tuple[str, str]]:
        found = {c for (_, _, m), cs in self.values.items() if merger in (None, m) for c in cs if isinstance(c, tuple)}
        return sorted(found, key=_weaving_order)

    def setup_means(self, setup: str, merger: str, configs: tuple) -> dict | None:
        """Mean over models of each configuration, over models that have all of ``configs``."""
        models = [
            vals
            for (_, s, m), vals in self.values.items()
            if s == setup and m == merger and all(c in vals for c in configs)
        ]
        if not models:
            return None
        return {c: _mean([vals[c] for vals in models]) for c in configs}

    def overall_means(self, merger: str, configs: tuple) -> dict | None:
        """Mean over setups of :meth:`setup_means` (setups lacking a configuration are left out)."""
        per_setup = [x for s in self.setups if (x := self.setup_means(s, merger, configs)) is not None]
        if not per_setup:
            return None
        return {c: _mean([x[c] for x in per_setup]) for c in configs}

    def means(self, section: str, merger: str, configs: tuple) -> dict | None:
        return self.overall_means(merger, configs) if section == OVERALL else self.setup_means(section, merger, configs)

    @property
    def stats(self) -> PairedStats:
        """Bootstrap replicates of every configuration (built on first use: tables with ``ci=0``
        never pay for them)."""
        if self._stats is None:
            self._stats = self._stats_source()
        return self._stats

    def _model_samples(self, setup: str, merger: str, configs: tuple) -> dict | None:
        models = [
            m
            for (m, s, mg), vals in self.values.items()
            if s == setup and mg == merger and all(c in vals for c in configs)
        ]
        if not models:
            return None
        out = {}
        for c in configs:
            per_model = [self.stats.samples(m, setup, merger, c, self.metric) for m in models]
            if any(x is None for x in per_model):
                return {}
            out[c] = np.mean(per_model, axis=0)
        return out

    def interval(self, section: str, merger: str, configs: tuple, first, second) -> tuple[float, float] | None:
        """The ``ci`` % paired bootstrap interval of ``first − second`` for the cell that
        :meth:`means` computes over ``configs`` (same models, same setups); None when hidden or
        when some trial lacks per-example results."""
        if not self.ci:
            return None
        setups = self.setups if section == OVERALL else [section]
        per_setup = [x for s in setups if (x := self._model_samples(s, merger, configs)) is not None]
        if not per_setup or any(not x for x in per_setup):
            if per_setup:
                self.no_bits = True
            return None
        diff = np.mean([x[first] - x[second] for x in per_setup], axis=0)
        return percentile_interval(diff[1:], self.ci)

    def ci_notes(self) -> list[str]:
        if not self.ci:
            return []
        notes = [
            f"[low, high]: {self.ci:g} % paired bootstrap interval of the gain over test examples "
            f"({N_BOOT} replicates, one draw per test split shared by every configuration; seeds held fixed)"
        ]
        if self.no_bits:
            notes.append(
                "'-' in an interval column: some trials have no per-example results (written before "
                "results schema 2); re-run them for intervals"
            )
        return notes

    def best_weaving(self, merger: str) -> tuple[str, str] | None:
        """The weaving configuration with the best overall gain over the baseline (the best overall
        value when the merger has no baseline); ties → the first in pooling order."""
        has_fixed = FIXED in self.configs(merger)
        best, best_score = None, -math.inf
        for config in self.weavings(merger):
            means = self.overall_means(merger, (FIXED, config) if has_fixed else (config,))
            if means is None:
                continue
            score = means[config] - means[FIXED] if has_fixed else means[config]
            if score > best_score:
                best, best_score = config, score
        return best

    def oracle_lams(self, section: str, merger: str) -> list[float]:
        return sorted(
            {
                lam
                for (_, s, m), lams in self.lams.items()
                if m == merger and section in (OVERALL, s)
                for lam in lams.get(ORACLE, [])
            }
        )

    def fixed_lams(self) -> list[float]:
        return sorted({lam for lams in self.lams.values() for lam in lams.get(FIXED, [])})


def _weaving_order(config: tuple[str, str]) -> tuple:
    pooling, variant = config
    rank = POOLING_ORDER.index(pooling) if pooling in POOLING_ORDER else len(POOLING_ORDER)
    return rank, pooling, variant != "A*", variant


def weaving_label(config: tuple[str, str]) -> str:
    return f"{config[0]} {config[1]}"


def _metric_label(metric: str) -> str:
    return "accuracy" if metric == "accuracy" else "normalised accuracy"


def _caption(metric: str, extra: str = "") -> str:
    return (
        f"{_metric_label(metric)} %; per trial: mean over eval tasks (normalised = merged/expert per task, "
        f"then mean); per seed: mean over the trials pooled in a cell; then mean over seeds (std: see the "
        f"leaderboard); per setup: mean over models that have every compared configuration; overall: mean "
        f"over setups{extra}"
    )


def _sections(cells: "MethodCells") -> list[str]:
    """Every setup, then the overall mean — left out when one setup would only repeat itself."""
    return [*cells.setups, OVERALL] if len(cells.setups) > 1 else list(cells.setups)


def _baseline_label(cells: MethodCells) -> str:
    lams = cells.fixed_lams()
    return f"none (λ={format_lams(lams)})" if lams else "none (fixed λ)"


# ------------------------------------------------------------------------------ (a) weaving gain


def weaving_gain_table(
    table: pa.Table, metric: str = "accuracy", ci: float = DEFAULT_LEVEL, stats: Callable[[], PairedStats] | None = None
) -> ReportTable:
    """Rows (merger, weaving), per setup and overall: baseline, + weaving, gain in points. The
    best configuration per merger (largest overall gain) comes first and is marked as chosen on the
    test sets — its gain is each configuration's own, but which one is "best" was read off test data.
    ``stats`` lets several tables of one report share one set of bootstrap replicates."""
    cells = MethodCells(table, metric, ci, stats)
    sections = _sections(cells)
    columns = [Column("merger", "text", "merger"), Column("weaving", "text", "weaving")]
    for s in sections:
        columns += [
            Column(f"{s}: baseline", "pct", f"{s}_baseline"),
            Column(f"{s}: +weaving", "pct", f"{s}_woven"),
            Column(f"{s}: gain", "gain", f"{s}_gain"),
        ]
        if ci:
            columns.append(Column(f"{s}: gain {ci:g}% CI", "ci", f"{s}_gain_ci"))
    entries = []
    for merger in cells.mergers:
        if FIXED not in cells.configs(merger) or not cells.weavings(merger):
            continue
        best = cells.best_weaving(merger)
        for config in sorted(cells.weavings(merger), key=lambda c: (c != best, _weaving_order(c))):
            label = weaving_label(config) + (BEST_ON_TEST if config == best else "")
            row = [merger, label]
            for s in sections:
                means = cells.means(s, merger, (FIXED, config))
                if means is None:
                    row += [None, None, None]
                else:
                    row += [Stat(means[FIXED]), Stat(means[config]), means[config] - means[FIXED]]
                if ci:
                    row.append(None if means is None else cells.interval(s, merger, (FIXED, config), config, FIXED))
            overall = cells.overall_means(merger, (FIXED,))
            entries.append(((overall or {}).get(FIXED, math.inf), merger, row))
    if not entries:
        raise ValueError(
            "weaving-gain needs, for one merger at least, a fixed-λ baseline (pooling none) "
            "and weaving trials (pooling avg/randmix/...); this root has neither pair"
        )
    entries.sort(key=lambda e: (e[0], e[1]))  # weakest baseline first, as the paper lists them
    title = f"Weaving gain over the data-free baseline {_baseline_label(cells)}"
    return ReportTable(
        "weaving-gain",
        title,
        columns,
        [e[2] for e in entries],
        _caption(metric, "; gain in points"),
        [*cells.notes, *cells.ci_notes()],
    )


# -------------------------------------------------------------------------- (b) pooling ablation


def pooling_ablation_table(table: pa.Table, metric: str = "accuracy") -> ReportTable:
    """Sections per setup and overall; rows merger (and their mean); columns baseline then every
    pooling × variant present."""
    cells = MethodCells(table, metric)
    weavings = cells.weavings()
    if not weavings:
        raise ValueError("pooling-ablation needs weaving trials (poolings avg/randmix/magmax/...); this root has none")
    configs = [FIXED, *weavings]
    columns = [
        Column("setup", "text", "setup"),
        Column("merger", "text", "merger"),
        Column(_baseline_label(cells), "pct", "baseline"),
    ]
    columns += [
        Column(weaving_label(c), "pct", f"{c[0]}_{'collaborative' if c[1] == 'A*' else 'plain'}") for c in weavings
    ]
    rows, styles = [], []
    for section in _sections(cells):
        values_by_merger = {}
        for merger in cells.mergers:
            vals = [cells.means(section, merger, (c,)) for c in configs]
            vals = [None if v is None else v[c] for v, c in zip(vals, configs)]
            if any(v is not None for v in vals):
                values_by_merger[merger] = vals
        label = "all setups (mean)" if section == OVERALL else section
        for merger, vals in values_by_merger.items():
            rows.append([label, merger, *(None if v is None else Stat(v) for v in vals)])
            styles.append(None)
        if len(values_by_merger) > 1:
            means = [[v[i] for v in values_by_merger.values() if v[i] is not None] for i in range(len(configs))]
            rows.append([label, "mean over mergers", *(Stat(_mean(m)) if m else None for m in means)])
            styles.append("bold")
    caption = _caption(
        metric,
        "; 'mean over mergers' averages the mergers that have the column; "
        "A* = collaborative (experts and λ·M pooled), A = λ·M only",
    )
    return ReportTable(
        "pooling-ablation", "Pooling-function ablation", columns, rows, caption, cells.notes, sections=1, styles=styles
    )


# ----------------------------------------------------------------------------------- (c) oracle


def oracle_table(
    table: pa.Table,
    metric: str = "accuracy",
    weaving: tuple[str, str] = DEFAULT_WEAVING,
    ci: float = DEFAULT_LEVEL,
    stats: Callable[[], PairedStats] | None = None,
) -> ReportTable:
    """Per setup and overall: baseline, one weaving configuration, and the oracle λ (best on the
    test sets).

    The weaving configuration is ``weaving`` — fixed before looking at any result (default the
    paper's, avg over A*) — never the one that happens to score best: picking it on the same test
    sets the oracle uses would make "weaving − oracle" flatter weaving.
    """
    cells = MethodCells(table, metric, ci, stats)
    mergers = [m for m in cells.mergers if ORACLE in cells.configs(m)]
    if not mergers:
        raise ValueError(
            "the oracle table needs oracle trials (pooling: oracle in the spec's poolings); this root has none"
        )
    config = tuple(weaving)
    columns = [
        Column("setup", "text", "setup"),
        Column("merger", "text", "merger"),
        Column(_baseline_label(cells), "pct", "baseline"),
        Column(f"+weaving ({weaving_label(config)})", "pct", "woven"),
    ]
    if ci:
        columns.append(Column(f"weaving gain {ci:g}% CI", "ci", "weaving_gain_ci"))
    columns += [
        Column("oracle λ", "text", "oracle_lambda", test_data=True),
        Column("oracle", "pct", "oracle", test_data=True),
        Column("weaving - oracle", "gain", "weaving_minus_oracle", test_data=True),
    ]
    if ci:
        columns.append(Column(f"weaving - oracle {ci:g}% CI", "ci", "weaving_minus_oracle_ci", test_data=True))
    rows = []
    missing = [m for m in mergers if config not in cells.configs(m)]
    for section in _sections(cells):
        label = "all setups (mean)" if section == OVERALL else section
        for merger in mergers:
            configs = tuple(c for c in (FIXED, config, ORACLE) if c in cells.configs(merger))
            means = cells.means(section, merger, configs)
            if means is None:
                continue
            woven = means.get(config)
            row = [label, merger, _stat(means.get(FIXED)), _stat(woven)]
            if ci:
                pair = woven is not None and FIXED in means
                row.append(cells.interval(section, merger, configs, config, FIXED) if pair else None)
            row += [
                format_lams(cells.oracle_lams(section, merger)),
                Stat(means[ORACLE]),
                None if woven is None else woven - means[ORACLE],
            ]
            if ci:
                row.append(None if woven is None else cells.interval(section, merger, configs, config, ORACLE))
            rows.append(row)
    caption = _caption(
        metric,
        f"; weaving = {weaving_label(config)}, fixed before looking at results (--weaving); "
        "oracle λ = the λ of the grid with the best task-mean accuracy on the test sets, "
        "per trial",
    )
    notes = [TEST_DATA_NOTE, *cells.notes, *cells.ci_notes()]
    if ci:
        notes.append("the oracle's λ is re-chosen on every bootstrap replicate, so its interval includes the selection")
    if missing:
        notes.append(
            f"no {weaving_label(config)} weaving trials for {', '.join(missing)}; choose another "
            "configuration with --weaving POOLING,VARIANT"
        )
    return ReportTable(
        "oracle",
        "Weaving vs the oracle λ (oracle uses test data)",
        columns,
        rows,
        caption,
        notes,
        sections=1,
        uses_test_data=True,
    )


def _stat(value: float | None) -> Stat | None:
    return None if value is None else Stat(value)


# ------------------------------------------------------------------------------- λ-sweep data


def _oracle_task_means(table: pa.Table, metric: str = "accuracy") -> dict[tuple, dict[float, dict[str, float]]]:
    """(model, setup, merger) → λ → eval task → metric averaged over seeds (oracle rows only)."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    field = "accuracy" if metric == "accuracy" else "normalized_accuracy"
    for row in ok_rows(table):
        if row["lambda_policy"] == "oracle" and row[field] is not None:
            acc[(row["model"], row["setup"], row["merger"], row["lam"], row["eval_task"])].append(row[field])
    out: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for (model, setup, merger, lam, task), values in acc.items():
        out[(model, setup, merger)][lam][task] = _mean(values)
    return out


def lambda_curves(table: pa.Table, metric: str = "accuracy") -> dict[tuple, dict]:
    """(model, setup, merger) → {"lams": [...], "mean": [...], "tasks": {task: [...]}}: the oracle
    sweep averaged over seeds; ``mean`` is the task mean at each λ (the leaderboard's step 1)."""
    curves = {}
    for key, per_lam in sorted(_oracle_task_means(table, metric).items()):
        lams = sorted(per_lam)
        tasks = sorted({t for per_task in per_lam.values() for t in per_task})
        curves[key] = {
            "lams": lams,
            "mean": [_mean(list(per_lam[lam].values())) for lam in lams],
            "tasks": {t: [per_lam[lam].get(t, math.nan) for lam in lams] for t in tasks},
        }
    return curves


def best_lambda_per_task(table: pa.Table) -> list[dict]:
    """Per (model, setup, merger, eval task): the λ of the oracle sweep maximising that task's
    accuracy (averaged over seeds; ties → smallest λ) — the paper's motivation: one λ for all tasks
    is a compromise, and in CIL/DG the per-task optimum is spread out."""
    out = []
    for (model, setup, merger), per_lam in sorted(_oracle_task_means(table).items()):
        tasks = sorted({t for per_task in per_lam.values() for t in per_task})
        for task in tasks:
            lams = sorted(lam for lam in per_lam if task in per_lam[lam])
            best = max(lams, key=lambda lam: (per_lam[lam][task], -lam))
            out.append(
                dict(model=model, setup=setup, merger=merger, eval_task=task, lam=best, accuracy=per_lam[best][task])
            )
    return out


def weaving_levels(table: pa.Table) -> dict[tuple, list[dict]]:
    """(model, setup, merger) → the leaderboard rows a λ-curve plot draws as reference lines:
    every weaving configuration, the fixed-λ baseline and the zero-shot model."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    rows = leaderboard_rows(table, ("model", "setup", "merger", "pooling", "variant"))
    zeroshot = {(r["model"], r["setup"]): r for r in rows if r["kind"] == "zeroshot"}
    for r in rows:
        if r["lambda_policy"] in ("weave", "fixed"):
            out[(r["model"], r["setup"], r["merger"])].append(r)
    for key in list(out):
        if (key[0], key[1]) in zeroshot:
            out[key].append(zeroshot[(key[0], key[1])])
    return out


# ----------------------------------------------------------------------------------- registry

TABLES: dict[str, Callable[..., ReportTable]] = {
    "leaderboard": lambda table, by, metric, weaving, ci, stats: leaderboard_table(table, by),
    "weaving-gain": lambda table, by, metric, weaving, ci, stats: weaving_gain_table(table, metric, ci, stats),
    "pooling-ablation": lambda table, by, metric, weaving, ci, stats: pooling_ablation_table(table, metric),
    "oracle": lambda table, by, metric, weaving, ci, stats: oracle_table(table, metric, weaving, ci, stats),
}
TABLE_CHOICES = (*TABLES, "all")


def build_tables(
    table: pa.Table,
    which: str,
    by: tuple[str, ...],
    metric: str = "accuracy",
    weaving: tuple[str, str] = DEFAULT_WEAVING,
    ci: float = DEFAULT_LEVEL,
) -> tuple[list[ReportTable], list[str]]:
    """The requested tables, and for ``all`` a note per table the root cannot support (an explicit
    request for such a table is an error instead, so a script never gets an empty file silently)."""
    if which not in TABLE_CHOICES:
        raise ValueError(f"unknown table {which!r}; choose one of {', '.join(TABLE_CHOICES)}")
    if which != "all":
        return [TABLES[which](table, by, metric, weaving, ci, None)], []
    built, skipped = [], []
    stats = functools.cache(lambda: PairedStats(ok_rows(table)))  # one bootstrap for every table, on first use
    for name, builder in TABLES.items():
        try:
            built.append(builder(table, by, metric, weaving, ci, stats))
        except ValueError as exc:
            skipped.append(f"{name} skipped: {exc}")
    return built, skipped
