"""Paired statistics over per-example outcomes: bits round-trip, the bootstrap replays the
leaderboard's aggregation (checked against a brute-force loop and an exact enumeration), its
intervals cover a known difference ≈ 95 % of the time, McNemar is the exact binomial test, and
results written before per-example bits existed still report (without intervals)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmark.cli import main
from benchmark.report.compare import compare_tables
from benchmark.report.leaderboard import leaderboard_rows, ok_rows
from benchmark.report.paired import (
    ORACLE,
    PairedStats,
    mcnemar_exact,
    pack_correct,
    parse_config,
    percentile_interval,
    replicate_accuracies,
    replicate_indices,
    unpack_correct,
)
from benchmark.report.tables import oracle_table, weaving_gain_table
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from tests.benchmark.report.fixtures import row

WEAVE = dict(pooling="avg", collaborative=True, lambda_policy="weave")
FIXED = dict(pooling="none", collaborative=None, lambda_policy="fixed", lam=1.0, lambdas=[1.0])


def bits_rows(key: str, outcomes: dict[str, np.ndarray], lam=None, **fields) -> list[dict]:
    """Result rows of one trial whose accuracies come from the given per-example outcomes."""
    return [
        row(
            trial_key=key,
            eval_task=task,
            n_examples=len(o),
            n_correct=int(o.sum()),
            accuracy=float(o.mean()),
            correct_bits=pack_correct(o),
            lam=lam,
            **fields,
        )
        for task, o in outcomes.items()
    ]


def test_bits_round_trip_for_any_length():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 1000):
        bits = rng.random(n) < 0.5
        blob = pack_correct(bits)
        assert len(blob) == math.ceil(n / 8)
        assert np.array_equal(unpack_correct(blob, n), bits)
    with pytest.raises(ValueError, match="hold 8 outcomes, the row says n_examples = 9"):
        unpack_correct(pack_correct(np.ones(8, bool)), 9)


def test_mcnemar_is_the_exact_binomial_test_on_discordant_examples():
    a = np.array([1] * 50 + [1] * 9 + [0] * 2 + [0] * 39, bool)
    b = np.array([1] * 50 + [0] * 9 + [1] * 2 + [0] * 39, bool)
    result = mcnemar_exact(a, b)
    assert (result["only_a"], result["only_b"]) == (9, 2)
    brute = 2 * sum(math.comb(11, k) for k in range(0, 3)) / 2**11
    assert result["p_value"] == pytest.approx(brute)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    assert mcnemar_exact(a[:20], b[:20])["p_value"] == 1.0  # no discordant example among the first 20


def _world(rng, n=40):
    """Two tasks, two seeds; A = weaving, B = fixed λ, C = an oracle sweep over 3 λ."""
    rows = []
    for seed in (0, 1):
        for name, fields, lams in (("A", WEAVE, [None]), ("B", FIXED, [None]), ("C", {}, [0.5, 1.0, 1.5])):
            for lam in lams:
                outcomes = {t: rng.random(n) < p for t, p in (("a", 0.6), ("b", 0.4))}
                extra = dict(pooling="oracle", collaborative=None, lambda_policy="oracle") if name == "C" else fields
                rows += bits_rows(
                    f"{name}{seed}",
                    outcomes,
                    lam=lam if name == "C" else extra.get("lam"),
                    seed=seed,
                    **{k: v for k, v in extra.items() if k != "lam"},
                )
    return rows


def test_replicates_replay_the_leaderboard_aggregation_exactly_as_a_brute_force_loop():
    rng = np.random.default_rng(1)
    rows = _world(rng)
    n_boot = 50
    stats = PairedStats(rows, n_boot=n_boot, seed=3)
    # the observed value (index 0) is the leaderboard's
    board = {(r["pooling"]): r["accuracy"] for r in leaderboard_rows(pa.Table.from_pylist(rows, schema=results.SCHEMA))}
    assert stats.samples("m1", "s1", "ties", ("avg", "A*"))[0] == pytest.approx(board["avg"])
    assert stats.samples("m1", "s1", "ties", "fixed")[0] == pytest.approx(board["none"])
    assert stats.samples("m1", "s1", "ties", ORACLE)[0] == pytest.approx(board["oracle"])
    # brute force: the same draws, applied example by example, aggregated by loops
    draws = {t: np.concatenate(list(replicate_indices(("s1", t, 40), 40, n_boot, 3))) for t in "ab"}
    by_trial = {}
    for r in rows:
        by_trial.setdefault((r["trial_key"], r["seed"]), {}).setdefault(r["lam"], {})[r["eval_task"]] = unpack_correct(
            r["correct_bits"], r["n_examples"]
        )
    for name, config in (("A", ("avg", "A*")), ("B", "fixed"), ("C", ORACLE)):
        samples = stats.samples("m1", "s1", "ties", config)
        for b in range(n_boot):
            per_seed = []
            for seed in (0, 1):
                per_lam = by_trial[(f"{name}{seed}", seed)]
                means = {lam: np.mean([per_lam[lam][t][draws[t][b]].mean() for t in "ab"]) for lam in per_lam}
                best = max(sorted(means, key=lambda x: (x is None, x)), key=lambda lam: means[lam])
                per_seed.append(means[best])
            assert samples[1 + b] == pytest.approx(np.mean(per_seed), abs=1e-12), (name, b)


def test_normalised_replicates_divide_each_task_by_its_fixed_expert_accuracy():
    rng = np.random.default_rng(2)
    outcomes = {"a": rng.random(30) < 0.5, "b": rng.random(30) < 0.7}
    rows = bits_rows("t", outcomes, **WEAVE)
    rows[1]["expert_accuracy"] = 0.5
    stats = PairedStats(rows, n_boot=20)
    acc = (
        replicate_accuracies(("s1", "a", 30), outcomes["a"][None], 20)[:, 0] / 0.8
        + replicate_accuracies(("s1", "b", 30), outcomes["b"][None], 20)[:, 0] / 0.5
    )
    assert np.allclose(stats.samples("m1", "s1", "ties", ("avg", "A*"), "normalized"), acc / 2)


def test_percentile_interval_matches_the_exact_bootstrap_distribution():
    """n = 7 examples: all 7^7 resamples enumerated give the exact bootstrap distribution of A − B."""
    a = np.array([1, 1, 1, 0, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0], bool)
    n = len(a)
    diff = a.astype(int) - b.astype(int)
    counts = np.zeros(2 * n + 1)
    for draw in itertools.product(range(n), repeat=n):  # 823 543 resamples
        counts[diff[list(draw)].sum() + n] += 1
    exact_cdf = np.cumsum(counts) / counts.sum()
    atoms = (np.arange(2 * n + 1) - n) / n
    rows = bits_rows("A", {"a": a}, **WEAVE) + bits_rows("B", {"a": b}, **FIXED)
    stats = PairedStats(rows, n_boot=20000, seed=5)
    replicates = (stats.samples("m1", "s1", "ties", ("avg", "A*")) - stats.samples("m1", "s1", "ties", "fixed"))[1:]
    mc_cdf = np.array([(replicates <= x + 1e-9).mean() for x in atoms])
    assert np.abs(mc_cdf - exact_cdf).max() < 0.01  # Monte-Carlo error of 20 000 draws is ≈ 0.003
    low, high = percentile_interval(replicates, 95)
    assert atoms[np.searchsorted(exact_cdf, 0.025 - 0.01)] <= low <= atoms[np.searchsorted(exact_cdf, 0.025 + 0.01)]
    assert atoms[np.searchsorted(exact_cdf, 0.975 - 0.01)] <= high <= atoms[np.searchsorted(exact_cdf, 0.975 + 0.01)]


def test_intervals_cover_a_known_difference_about_95_percent_of_the_time():
    """Simulated test sets drawn from known populations: two tasks, two seeds, A and B strongly
    paired (an example hard for one tends to be hard for the other), true difference of the
    leaderboard value = mean over seeds and tasks of (p_A − p_B) = +2 points."""
    p_a = np.array([[0.62, 0.55], [0.60, 0.57]])  # [seed, task]
    p_b = np.array([[0.58, 0.55], [0.59, 0.54]])
    truth = float((p_a - p_b).mean())
    draws, n, rho = 400, 300, 0.8
    rng = np.random.default_rng(2026)
    # per draw and task a shared latent difficulty u; each model follows it with probability rho
    u = rng.random((draws, 2, n))

    def outcomes(p):  # [draws, seed, task, n]
        own = rng.random((draws, 2, 2, n))
        z = np.where(rng.random((draws, 2, 2, n)) < rho, u[:, None], own)
        return z < p[None, :, :, None]

    a, b = outcomes(p_a), outcomes(p_b)
    covered, widths = 0, []
    for d in range(draws):
        rows = []
        for seed in (0, 1):
            rows += bits_rows(f"A{seed}", {"a": a[d, seed, 0], "b": a[d, seed, 1]}, seed=seed, **WEAVE)
            rows += bits_rows(f"B{seed}", {"a": b[d, seed, 0], "b": b[d, seed, 1]}, seed=seed, **FIXED)
        stats = PairedStats(rows, n_boot=500, seed=d)
        diff = stats.samples("m1", "s1", "ties", ("avg", "A*")) - stats.samples("m1", "s1", "ties", "fixed")
        low, high = percentile_interval(diff[1:], 95)
        covered += low <= truth <= high
        widths.append(high - low)
    coverage = covered / draws
    assert 0.91 <= coverage <= 0.985, coverage  # ±3 standard errors of a 95 % rate over 400 draws
    # pairing makes the interval much narrower than two independent intervals would allow
    independent = 2 * 1.96 * math.sqrt(2 * 0.25 / (4 * n)) * math.sqrt(2)
    assert np.mean(widths) < 0.75 * independent


def _root_with_bits(tmp_path, old_schema_trial: bool = False) -> StorageRoot:
    storage = StorageRoot.at(tmp_path).ensure()
    base = (np.arange(200) + 0.5) / 200  # an example's difficulty: a model right up to p gets p·200 right
    a = {"a": base < 0.65, "b": base < 0.55}  # 130 and 110 right
    b = {"a": base < 0.55, "b": (base < 0.5) | (np.arange(200) % 20 == 19)}  # 110, and 100 + 5 A gets wrong
    results.write_part(storage, bits_rows("A", a, **WEAVE), "A")
    results.write_part(storage, bits_rows("B", b, **FIXED), "B")
    curve = {lam: {"a": base < p, "b": base < p - 0.1} for lam, p in ((0.5, 0.6), (1.0, 0.7), (1.5, 0.5))}
    rows = [
        r
        for lam, o in curve.items()
        for r in bits_rows(
            "O", o, lam=lam, pooling="oracle", collaborative=None, lambda_policy="oracle", uses_test_data=True
        )
    ]
    results.write_part(storage, rows, "O")
    if old_schema_trial:  # a part written by schema 1: no per-example columns at all
        old = [r for r in bits_rows("old", a, model="m2", **WEAVE) + bits_rows("oldB", b, model="m2", **FIXED)]
        schema = pa.schema([f for f in results.SCHEMA if f.name not in ("correct_bits", "balanced_accuracy")])
        path = results.part_path(storage, "m2", "s1", "old")
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(
                [{k: r.get(k) for k in schema.names} | {"schema_version": 1} for r in old], schema=schema
            ),
            path,
        )
    return storage


def test_gain_and_oracle_tables_carry_intervals_that_contain_their_gains(tmp_path):
    table = results.read_results(_root_with_bits(tmp_path))
    gain = weaving_gain_table(table)
    labels = [c.label for c in gain.columns]
    assert labels == ["merger", "weaving", "s1: baseline", "s1: +weaving", "s1: gain", "s1: gain 95% CI"]
    (row_,) = gain.rows
    low, high = row_[5]
    assert row_[4] == pytest.approx(0.0625) and low < 0.0625 < high and high - low < 0.1
    assert low > 0  # 30 examples only A gets right, 5 only B: a real difference
    oracle = oracle_table(table)
    assert [c.shown_label for c in oracle.columns][-1] == "weaving - oracle 95% CI (test data)"
    (orow,) = oracle.rows
    assert orow[4] == pytest.approx((low, high))  # the same cell, the same draws
    assert orow[7] == pytest.approx(0.60 - 0.65) and orow[8][0] < orow[7] < orow[8][1]  # oracle: λ = 1
    narrower = weaving_gain_table(table, ci=80).rows[0][5]
    assert low < narrower[0] < narrower[1] < high
    assert len(weaving_gain_table(table, ci=0).columns) == 5
    with pytest.raises(ValueError, match="--ci 100"):
        weaving_gain_table(table, ci=100)


def test_compare_prints_the_paired_difference_interval_seed_spread_and_mcnemar(tmp_path, capsys):
    storage = _root_with_bits(tmp_path)
    table = results.read_results(storage)
    comparison, tests = compare_tables(table, "ties/avg/A*", "ties/none")
    (crow,) = comparison.rows
    assert crow[:2] == ["m1", "s1"] and crow[4] == pytest.approx(0.0625)
    assert crow[5] == pytest.approx(weaving_gain_table(table).rows[0][5])  # as the gain table's interval
    assert crow[6] == 1 and crow[7] == "one seed"
    assert [r[3] for r in tests.rows] == ["a", "b"] and tests.rows[0][5:7] == [20, 0] and tests.rows[1][5:7] == [10, 5]
    assert main(["report", str(storage.root), "--compare", "ties/avg", "ties/oracle", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "Paired comparison: ties/avg/A\\* vs ties/oracle" in out and "McNemar" in out
    assert main(["report", str(storage.root), "--compare", "ties/avg/A*", "ties/none", "--ci", "0"]) == 0
    assert "CI" not in capsys.readouterr().out.split("Exact McNemar")[0]
    with pytest.raises(
        ValueError, match="no such configuration; configurations in this root: ties/avg/A\\*, ties/none"
    ):
        parse_config("ties/magmax/A", PairedStats(ok_rows(table)).configurations())
    with pytest.raises(ValueError, match="MERGER/POOLING"):
        parse_config("ties", {})
    assert main(["report", str(storage.root), "--compare", "ties/avg/A*", "ta/none"]) == 2
    assert "no such configuration" in capsys.readouterr().out


def test_results_of_schema_1_still_report_without_intervals(tmp_path):
    storage = _root_with_bits(tmp_path, old_schema_trial=True)
    table = results.read_results(storage)
    old = [r for r in table.to_pylist() if r["model"] == "m2"]
    assert old and all(r["correct_bits"] is None and r["balanced_accuracy"] is None for r in old)
    gain = weaving_gain_table(table)
    # m2 enters the s1 cell (mean over both models), so that cell has no interval, and says why
    (row_,) = gain.rows
    assert row_[4] == pytest.approx(0.0625) and row_[5] is None
    assert any("written before results schema 2" in note for note in gain.notes)
    comparison, *_ = compare_tables(table, "ties/avg/A*", "ties/none")
    assert [r[0] for r in comparison.rows] == ["m1", "m2"] and comparison.rows[1][5] is None
    assert comparison.rows[1][4] == pytest.approx(0.0625)  # the point estimate is still reported
    assert any("schema 2" in note for note in comparison.notes)


ZEROSHOT_ROW = dict(merger="zeroshot", pooling="-", collaborative=None, lambda_policy="reference", lam=None, lambdas=[])


def test_a_merge_compares_with_theta0_through_its_zero_shot_outcomes(tmp_path):
    storage = _root_with_bits(tmp_path)
    base = (np.arange(200) + 0.5) / 200
    zeroshot = {"a": base < 0.40, "b": base < 0.30}  # 80 and 60 right; the weave gets 130 and 110
    results.write_part(storage, bits_rows("zeroshot-bank", zeroshot, **ZEROSHOT_ROW), "zeroshot-bank")
    table = results.read_results(storage)
    comparison, tests = compare_tables(table, "ties/avg/A*", "zeroshot")
    (crow,) = comparison.rows
    assert crow[4] == pytest.approx((130 + 110 - 80 - 60) / 400) and crow[5][0] > 0.2
    assert [r[3] for r in tests.rows] == ["a", "b"] and tests.rows[0][5:7] == [50, 0]
    assert "Paired comparison: ties/avg/A* vs zeroshot" == comparison.title
    # the leaderboard's tables still see θ0 as a reference row, not as a configuration of a merger
    without = results.read_results(_root_with_bits(tmp_path / "b"))
    assert weaving_gain_table(table).rows == weaving_gain_table(without).rows
    # zero-shot rows written before their outcomes were kept: the comparison says how to get them
    old = StorageRoot.at(tmp_path / "old").ensure()
    results.write_part(old, bits_rows("A", {"a": base < 0.6}, **WEAVE), "A")
    results.write_part(old, [{**r, "correct_bits": None} for r in bits_rows("z", zeroshot, **ZEROSHOT_ROW)], "z")
    with pytest.raises(ValueError, match="zero-shot rows have no per-example results.*re-run the spec"):
        compare_tables(results.read_results(old), "ties/avg/A*", "zeroshot")
