"""Leaderboards from the Parquet dataset (the single source of truth), grouped by any result columns.

Aggregation order, stated in every output because it changes the numbers:
1. per trial (and seed): mean over its eval tasks; normalised accuracy = merged ÷ expert per task,
   then mean (docs/METHODS.md §3: the mean of ratios, not the ratio of means);
2. per seed: mean over the trials a group pools together (the axes not in ``--by``);
3. mean ± sample std (n − 1) over seeds.

Before any of this, `newest_revisions` keeps, for each configuration (model, setup, merger and its
resolved hyper-parameters, pooling, variant, λ policy and grid, seed), only the trials of its
newest code revisions (the ``*_revision`` columns): a number is never averaged with one an older
merger, pooling or stage produced, and a one-line note says how many trials were left out.

Oracle trials hold one row per (λ, task); their entry is the λ whose task-mean accuracy on the test
sets is best (ties → the smallest λ) — the privileged reference the paper compares weaving
against, so it is always flagged as using test data. References (zero-shot, expert) and oracle
entries are never pooled with merged models, whatever ``--by`` says.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console

from benchmark.report.formats import Column, ReportTable, Stat, render_rich
from benchmark.results.storage import StorageRoot

#: The default leaderboard: one block per (model, setup), one row per method.
DEFAULT_BY = ("model", "setup", "merger", "pooling", "variant")
AGGREGATION = (
    "per trial: mean over eval tasks (normalised = merged/expert per task, then mean); "
    "per seed: mean over the trials pooled in a row; then mean ± std over seeds"
)

#: Columns a leaderboard may be grouped by (``variant`` is ``collaborative`` shown as A*/A/-).
GROUPABLE = (
    "model",
    "pretrained",
    "setup",
    "setup_kind",
    "finetune_mode",
    "n_tasks",
    "merger",
    "merger_params",
    "pooling",
    "variant",
    "collaborative",
    "lambda_policy",
    "lam",
    "seed",
    "eval_task",
    "run_name",
    "spec_hash",
    "code_version",
    "host",
)
#: Columns that vary inside one trial: grouping by them splits a trial instead of pooling trials.
WITHIN_TRIAL = ("eval_task", "lam")
#: Columns that describe where a model is evaluated; they become the blocks of a displayed table.
CONTEXT = ("model", "pretrained", "setup", "setup_kind", "finetune_mode")
REFERENCE_MERGERS = ("zeroshot", "expert")


#: What one configuration is: the trial-level columns that say *what* was computed (not by which
#: revision of the code, nor where or when). ``lam`` joins them for fixed-λ trials only.
CONFIGURATION = (
    "model",
    "pretrained",
    "setup",
    "setup_kind",
    "finetune_mode",
    "merger",
    "merger_params",
    "pooling",
    "collaborative",
    "lambda_policy",
    "lambdas",
    "seed",
)
#: The revisions compared to find the newest, most significant first (absent or null = oldest).
REVISION_ORDER = ("merger", "pooling", "eval", "heads", "finetune", "pretrain", "toy_data")


def _configuration(row: dict) -> tuple:
    params = row["merger_params"]
    if row["revisions"] is None and row["lambda_policy"] != "reference":
        params = _resolved_params_text(row["merger"], params, row["seed"])
    values = {**row, "merger_params": params, "lambdas": tuple(row["lambdas"] or ())}
    lam = row["lam"] if row["lambda_policy"] != "oracle" else None
    return (*(values[c] for c in CONFIGURATION), lam)


def _resolved_params_text(merger: str, params: str | None, seed) -> str | None:
    """A row written before schema 2 holds the hyper-parameters as the spec wrote them; resolve them
    with today's defaults so it meets the newer rows of its configuration (unknown merger: as written)."""
    import ww
    from benchmark.spec.keys import canonical_json
    from benchmark.spec.plan import effective_params

    if merger not in ww.MERGERS:
        return params
    try:
        return canonical_json(effective_params(merger, json.loads(params or "{}"), seed))
    except (ValueError, TypeError):
        return params


def _revision_order(revisions: str | None) -> tuple[int, ...]:
    known = json.loads(revisions) if revisions else {}
    return tuple(-1 if known.get(name) is None else int(known[name]) for name in REVISION_ORDER)


def newest_revisions(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """The rows of each configuration's newest code revisions, and a one-line note when any were
    left out (none otherwise).

    Trials of one configuration written by different revisions (a merger fixed since, a new
    fine-tuning loop, a plugin edited) measure different code: pooling them would report a number
    no code produces. The newest is the highest revision tuple (`REVISION_ORDER`; rows written
    before revisions were recorded count as oldest), then the latest ``finished_at`` (a plugin's
    source digest has no order). Error rows take part: a newer revision that failed hides an older
    success rather than letting a stale number stand in for it.
    """
    if table.num_rows == 0:
        return table, []
    columns = [*CONFIGURATION, "lam", "revisions", "trial_key", "finished_at"]
    trials: dict[str, tuple] = {}
    for row in table.select(columns).to_pylist():
        config, provenance = _configuration(row), row["revisions"]
        seen = trials.get(row["trial_key"])
        finished = row["finished_at"].timestamp() if row["finished_at"] is not None else float("-inf")
        if seen is None or finished > seen[2]:
            trials[row["trial_key"]] = (config, provenance, finished)
    newest: dict[tuple, tuple] = {}
    for config, provenance, finished in trials.values():
        order = (_revision_order(provenance), finished)
        if config not in newest or order > newest[config][1]:
            newest[config] = (provenance, order)
    dropped = {key: config for key, (config, provenance, _) in trials.items() if provenance != newest[config][0]}
    if not dropped:
        return table, []
    keep = pc.invert(pc.is_in(table.column("trial_key"), value_set=pa.array(sorted(dropped))))
    what = sorted({str(config[CONFIGURATION.index("merger")]) for config in dropped.values()})
    note = (
        f"{len(dropped)} trial(s) of {', '.join(what)} left out: an older code revision of a configuration "
        "also run at a newer one (kept the newest; see the *_revision columns of the dataset)"
    )
    return table.filter(keep), [note]


def variant_name(collaborative) -> str:
    return "-" if collaborative is None else ("A*" if collaborative else "A")


def parse_by(text: str | None) -> tuple[str, ...]:
    """``"model,setup,merger"`` → validated column tuple; unknown names fail naming the valid ones."""
    if text is None:
        return DEFAULT_BY
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ValueError(f"--by needs at least one column; valid: {', '.join(GROUPABLE)}")
    unknown = [n for n in names if n not in GROUPABLE]
    if unknown:
        raise ValueError(f"--by: unknown column(s) {', '.join(unknown)}; valid: {', '.join(GROUPABLE)}")
    return names


def _value(row: dict, column: str):
    return variant_name(row["collaborative"]) if column == "variant" else row[column]


def _kind(row: dict) -> str:
    """What a row measures, which no grouping may mix: a reference, the oracle, or a merged model."""
    if row["lambda_policy"] == "reference":
        return row["merger"]
    return "oracle" if row["lambda_policy"] == "oracle" else "merged"


def ok_rows(table: pa.Table) -> list[dict]:
    return [row for row in table.to_pylist() if row["status"] == "ok"]


def oracle_best_lambdas(rows: list[dict]) -> dict[tuple, float]:
    """(trial_key, seed) → the λ with the best task-mean accuracy on the test sets (ties → smallest λ)."""
    sums: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["lambda_policy"] == "oracle":
            sums[(row["trial_key"], row["seed"])][row["lam"]].append(row["accuracy"])
    best = {}
    for key, per_lam in sums.items():
        best[key] = max(sorted(per_lam), key=lambda lam: (_mean(per_lam[lam]), -lam))
    return best


def trial_scores(table: pa.Table, within: tuple[str, ...] = ()) -> list[dict]:
    """Step 1 of the aggregation: one entry per trial and seed (and per value of the ``within``
    columns, which vary inside a trial) with the task-mean accuracy and normalised accuracy.

    Oracle trials are reduced to their best λ unless ``lam`` is in ``within`` (then every λ of
    the sweep is its own entry — the λ curve).
    """
    rows = ok_rows(table)
    best = {} if "lam" in within else oracle_best_lambdas(rows)
    entries: dict[tuple, dict] = {}
    for row in rows:
        if row["lambda_policy"] == "oracle" and "lam" not in within:
            if row["lam"] != best[(row["trial_key"], row["seed"])]:
                continue
        key = (row["trial_key"], row["seed"], *(row[c] for c in within))
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = {**row, "kind": _kind(row), "acc": [], "norm": [], "bal": []}
        entry["acc"].append(row["accuracy"])
        if row["normalized_accuracy"] is not None:
            entry["norm"].append(row["normalized_accuracy"])
        if row.get("balanced_accuracy") is not None:
            entry["bal"].append(row["balanced_accuracy"])
    for entry in entries.values():
        entry["mean_acc"] = _mean(entry["acc"])
        entry["mean_norm"] = _mean(entry["norm"])
        # only when every eval task has it (rows of schema 1 and references have none)
        entry["mean_bal"] = _mean(entry["bal"]) if len(entry["bal"]) == len(entry["acc"]) else float("nan")
    return list(entries.values())


def leaderboard_rows(table: pa.Table, by: tuple[str, ...] = DEFAULT_BY) -> list[dict]:
    """One dict per group of ``by`` (steps 2–3 of the aggregation), sorted best first per block.

    Keys: the ``by`` columns, ``kind``, ``variant``/``collaborative`` when grouped by either,
    ``lambda`` (text), ``lams`` (the λ of the entries: fixed, or each oracle trial's best),
    ``uses_test_data``, ``n_seeds``,
    ``n_trials``, ``accuracy``/``accuracy_std``, ``normalized``/``normalized_std``,
    ``balanced``/``balanced_std`` (mean per-class recall; NaN where a row lacks it), ``dg`` (the
    group holds domain-generalisation trials, whose tables show balanced accuracy), ``mixed_params``
    (the row pools trials of one merger with different hyper-parameters).
    """
    by = tuple(by)
    within = tuple(c for c in by if c in WITHIN_TRIAL)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for entry in trial_scores(table, within):
        groups[(*(_value(entry, c) for c in by), entry["kind"])].append(entry)
    out = []
    for key, entries in groups.items():
        per_seed: dict[int, list[dict]] = defaultdict(list)
        for entry in entries:
            per_seed[entry["seed"]].append(entry)
        accs = [_mean([e["mean_acc"] for e in es]) for es in per_seed.values()]
        norms = [_nanmean([e["mean_norm"] for e in es]) for es in per_seed.values()]
        norms = [x for x in norms if not math.isnan(x)]
        bals = [_mean([e["mean_bal"] for e in es]) for es in per_seed.values()]
        bals = [x for x in bals if not math.isnan(x)]
        row = dict(zip(by, key[:-1]))
        first = entries[0]
        row.update(
            kind=key[-1],
            lams=sorted({e["lam"] for e in entries if e["lam"] is not None}),
            uses_test_data=any(e["uses_test_data"] or e["lambda_policy"] == "oracle" for e in entries),
            n_seeds=len(per_seed),
            n_trials=len({e["trial_key"] for e in entries}),
            mixed_params="merger_params" not in by and len({e["merger_params"] for e in entries}) > 1,
            accuracy=_mean(accs),
            accuracy_std=_std(accs),
            normalized=_mean(norms),
            normalized_std=_std(norms),
            balanced=_mean(bals) if len(bals) == len(per_seed) else float("nan"),
            balanced_std=_std(bals),
            dg=any(e["setup_kind"] == "dg" for e in entries),
        )
        row["lambda"] = _lambda_text(entries)
        policies = {e["lambda_policy"] for e in entries}
        row.setdefault("lambda_policy", policies.pop() if len(policies) == 1 else "mixed")
        if "collaborative" in by or "variant" in by:
            row.setdefault(
                "collaborative", first["collaborative"] if len({e["collaborative"] for e in entries}) == 1 else None
            )
            row["variant"] = variant_name(row["collaborative"])
        out.append(row)
    sections = section_columns(by)
    out.sort(
        key=lambda r: (
            *(_sortable(r[c]) for c in sections),
            -r["accuracy"] if not math.isnan(r["accuracy"]) else math.inf,
        )
    )
    return out


def section_columns(by: tuple[str, ...]) -> tuple[str, ...]:
    """The context columns of ``by`` split a displayed leaderboard into blocks — unless every
    column is context, when blocks of one row each would hide the comparison."""
    context = tuple(c for c in by if c in CONTEXT)
    return () if len(context) == len(by) else context


def _sortable(value):
    return (value is None, str(value))


def _lambda_text(entries: list[dict]) -> str:
    texts = sorted({_one_lambda_text(e) for e in entries if e["lambda_policy"] != "oracle"})
    oracle = sorted({e["lam"] for e in entries if e["lambda_policy"] == "oracle"})
    if oracle:
        texts.append(f"oracle λ={format_lams(oracle)} (test data)")
    return texts[0] if len(texts) == 1 else ("various" if texts else "-")


def format_lams(lams: list[float]) -> str:
    """A set of λ as short text: ``0.3``, ``0.3/0.4``, or ``0.2–0.9`` when there are many."""
    lams = sorted(set(lams))
    if len(lams) <= 3:
        return "/".join(f"{x:g}" for x in lams)
    return f"{lams[0]:g}–{lams[-1]:g}"


def _one_lambda_text(entry: dict) -> str:
    policy = entry["lambda_policy"]
    if policy == "reference":
        return "-"
    if policy == "fixed":
        return f"{entry['lam']:g}"
    lambdas = entry["lambdas"] or []
    return f"{lambdas[0]:g}–{lambdas[-1]:g}·{len(lambdas)}" if lambdas else "weave"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _nanmean(xs: list[float]) -> float:
    return _mean([x for x in xs if not math.isnan(x)])


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def leaderboard_table(table: pa.Table, by: tuple[str, ...] = DEFAULT_BY, title: str = "Leaderboard") -> ReportTable:
    """The leaderboard as a renderable table: ``by`` columns, then λ, seeds, accuracy, normalised."""
    rows = leaderboard_rows(table, by)
    sections = section_columns(by)
    shown = [*sections, *(c for c in by if c not in sections)]
    columns = [Column(c, "text", c) for c in shown]
    if "merger" not in by:
        columns.append(Column("kind", "text", "kind"))
    columns += [
        Column("λ", "text", "lambda"),
        Column("seeds", "int", "n_seeds"),
        Column("accuracy %", "pct", "accuracy"),
        Column("normalised %", "pct", "normalized"),
    ]
    balanced = any(r["dg"] for r in rows)  # docs/METHODS.md §3: DG also reports balanced accuracy
    if balanced:
        columns.append(Column("balanced %", "pct", "balanced"))
    cells, styles = [], []
    for r in rows:
        values = [_display(r[c]) for c in shown]
        if "merger" not in by:
            values.append(r["kind"])
        values += [
            r["lambda"],
            r["n_seeds"],
            Stat(r["accuracy"], r["accuracy_std"], r["n_seeds"]),
            Stat(r["normalized"], r["normalized_std"], r["n_seeds"]),
        ]
        if balanced:
            values.append(Stat(r["balanced"], r["balanced_std"], r["n_seeds"]))
        cells.append(values)
        styles.append("dim" if r["kind"] in REFERENCE_MERGERS else ("yellow" if r["uses_test_data"] else None))
    mixed = sorted({str(r.get("merger", "-")) for r in rows if r["mixed_params"]})
    notes = [mixed_params_note(mixed, "add merger_params to --by to tell them apart")] if mixed else []
    if any(r["uses_test_data"] for r in rows):
        notes.append(
            "Rows marked 'oracle ... (test data)' choose λ on the test sets: "
            "a privileged reference, not a data-free result."
        )
    return ReportTable(
        "leaderboard",
        title,
        columns,
        cells,
        AGGREGATION,
        notes,
        len(sections),
        styles,
        uses_test_data=any(r["uses_test_data"] for r in rows),
    )


def mixed_params_note(mergers: list[str], fix: str) -> str:
    """Two hyper-parameter settings of one merger averaged together would read as one method."""
    return f"rows of {', '.join(mergers)} pool trials with different merger_params (hyper-parameters); {fix}"


def _display(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else str(value)


def render_leaderboard(
    table: pa.Table, console: Console | None = None, title: str = "Leaderboard", by: tuple[str, ...] = DEFAULT_BY
) -> list[dict]:
    """Print the leaderboard with rich (what ``run`` shows at the end); returns its rows."""
    console = console or Console()
    table, revision_notes = newest_revisions(table)
    rows = leaderboard_rows(table, by)
    if not rows:
        console.print("[yellow]no finished trials in this root yet[/]")
        return rows
    board = leaderboard_table(table, by, title)
    board.notes.extend(revision_notes)
    render_rich([board], console)
    errors = error_count(table)
    if errors:
        console.print(f"[red]{errors} error row(s) present; see the 'error' column of the Parquet dataset[/]")
    return rows


def refuse_inside_results(storage: StorageRoot, path: Path) -> Path:
    """Report files never go into ``<root>/results``: that folder is the dataset, and a stray
    ``.parquet`` or a replaced part would change the very results being reported."""
    path = path.expanduser().resolve()
    results = storage.results  # a RootPath under an object-store root: no local path can be inside it
    if isinstance(results, Path) and (path == results or results in path.parents):
        raise ValueError(
            f"{path} is inside the results dataset {storage.results}; write reports elsewhere "
            f"(e.g. {storage.root / 'reports'})"
        )
    return path


def error_count(table: pa.Table) -> int:
    return sum(1 for s in table.column("status").to_pylist() if s != "ok")
