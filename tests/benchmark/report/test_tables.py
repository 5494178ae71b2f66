"""The paper's tables on a synthetic root with known numbers (see ``tests.benchmark.report.fixtures``):
weaving gain per setup and overall, the pooling ablation, the oracle side by side, λ-sweep data."""

from __future__ import annotations

import math

import pytest

from benchmark.report.formats import Stat
from benchmark.report.tables import (
    best_lambda_per_task,
    build_tables,
    lambda_curves,
    oracle_table,
    parse_weaving,
    pooling_ablation_table,
    weaving_gain_table,
)
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from tests.benchmark.report.fixtures import paper_root, write_oracle, write_trial


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return results.read_results(paper_root(tmp_path_factory.mktemp("paper")))


def _values(row):
    """Cells as plain numbers (Stat → mean), text unchanged, so rows compare with approx."""
    return [c.mean if isinstance(c, Stat) else c for c in row]


def _approx_row(row, expected):
    got = _values(row)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if isinstance(e, float):
            assert g == pytest.approx(e), (got, expected)
        else:
            assert g == e, (got, expected)


def test_weaving_gain_per_setup_and_overall_over_paired_models(table):
    report = weaving_gain_table(table, ci=0)  # no intervals (report/test_paired.py has them)
    labels = [c.label for c in report.columns]
    assert labels == [
        "merger",
        "weaving",
        "s1: baseline",
        "s1: +weaving",
        "s1: gain",
        "s2: baseline",
        "s2: +weaving",
        "s2: gain",
        "overall: baseline",
        "overall: +weaving",
        "overall: gain",
    ]
    rows = report.rows
    # weakest overall baseline first (ta .25 < ties .35); per merger the best configuration first
    assert [(r[0], r[1]) for r in rows] == [
        ("ta", "avg A* (best on test data)"),
        ("ties", "avg A* (best on test data)"),
        ("ties", "randmix A*"),
        ("ties", "magmax A"),
    ]
    # ta has weaving on m1 only: its s1 baseline is m1's .20, not the mean .25 over both models
    _approx_row(rows[0], ["ta", "avg A* (best on test data)", 0.20, 0.50, 0.30, None, None, None, 0.20, 0.50, 0.30])
    _approx_row(rows[1], ["ties", "avg A* (best on test data)", 0.45, 0.53, 0.08, 0.25, 0.35, 0.10, 0.35, 0.44, 0.09])
    _approx_row(rows[2], ["ties", "randmix A*", 0.45, 0.50, 0.05, 0.25, 0.26, 0.01, 0.35, 0.38, 0.03])
    _approx_row(rows[3], ["ties", "magmax A", 0.50, 0.20, -0.30, None, None, None, 0.50, 0.20, -0.30])
    assert "per setup: mean over models that have every compared configuration" in report.caption
    assert "λ=1" in report.title


def test_weaving_gain_in_normalised_accuracy(table):
    rows = weaving_gain_table(table, metric="normalized", ci=0).rows
    assert rows[0][4] == pytest.approx(0.30 / 0.8)  # expert accuracy is 0.8 on every task
    assert "normalised accuracy %" in weaving_gain_table(table, metric="normalized").caption
    with pytest.raises(ValueError, match="unknown metric"):
        weaving_gain_table(table, metric="f1")


def test_pooling_ablation_rows_merger_columns_pooling_by_variant(table):
    report = pooling_ablation_table(table)
    assert [c.label for c in report.columns] == ["setup", "merger", "none (λ=1)", "avg A*", "randmix A*", "magmax A"]
    assert report.sections == 1
    expected = [
        ["s1", "ta", 0.25, 0.50, None, None],
        ["s1", "ties", 0.45, 0.53, 0.50, 0.20],
        ["s1", "mean over mergers", 0.35, 0.515, 0.50, 0.20],
        ["s2", "ties", 0.25, 0.35, 0.26, None],
        ["all setups (mean)", "ta", 0.25, 0.50, None, None],
        ["all setups (mean)", "ties", 0.35, 0.44, 0.38, 0.20],
        ["all setups (mean)", "mean over mergers", 0.30, 0.47, 0.38, 0.20],
    ]
    assert len(report.rows) == len(expected)
    for row, want in zip(report.rows, expected):
        _approx_row(row, want)


def test_oracle_table_is_flagged_and_compares_on_the_same_models(table):
    report = oracle_table(table, ci=0)
    assert report.uses_test_data and "uses test data" in report.title
    assert any("test sets" in n for n in report.notes)
    assert [c.shown_label for c in report.columns] == [
        "setup",
        "merger",
        "none (λ=1)",
        "+weaving (avg A*)",
        "oracle λ (test data)",
        "oracle (test data)",
        "weaving - oracle (test data)",
    ]
    # only m1/s1 has an oracle sweep, so baseline and weaving are m1's too (.50, .60, not .45, .53)
    _approx_row(report.rows[0], ["s1", "ties", 0.50, 0.60, "1", 0.65, -0.05])
    _approx_row(report.rows[1], ["all setups (mean)", "ties", 0.50, 0.60, "1", 0.65, -0.05])
    assert len(report.rows) == 2
    # another configuration, named in advance
    chosen = oracle_table(table, weaving=parse_weaving("randmix,collaborative"), ci=0)
    assert chosen.columns[3].label == "+weaving (randmix A*)"
    _approx_row(chosen.rows[0], ["s1", "ties", 0.50, 0.55, "1", 0.65, -0.10])


def _best_is_not_the_default(tmp_path) -> StorageRoot:
    """randmix gains most on the test sets; the paper's avg A* does not."""
    storage = StorageRoot.at(tmp_path).ensure()
    write_trial(storage, {"a": 0.4}, pooling="none")
    write_trial(storage, {"a": 0.5}, pooling="avg")
    write_trial(storage, {"a": 0.7}, pooling="randmix")
    write_oracle(storage, {0.5: {"a": 0.6}, 1.0: {"a": 0.55}})
    return storage


def test_oracle_table_compares_a_configuration_fixed_in_advance_not_the_best_on_test(tmp_path):
    table = results.read_results(_best_is_not_the_default(tmp_path))
    gain = weaving_gain_table(table)
    assert gain.rows[0][1] == "randmix A* (best on test data)"  # the test-set pick is labelled as such
    report = oracle_table(table, ci=0)
    _approx_row(report.rows[0], ["s1", "ties", 0.40, 0.50, "0.5", 0.60, -0.10])  # avg A*, not randmix's .70
    missing = oracle_table(table, weaving=("magmax", "A"), ci=0)
    assert missing.rows[0][3] is None and any("no magmax A weaving trials for ties" in n for n in missing.notes)


@pytest.mark.parametrize(
    "text, message",
    [
        ("avg", "give POOLING,VARIANT"),
        ("avg,collab", "collaborative \\(A\\*\\) or plain"),
        ("none,plain", "none is not a weaving pooling"),
        ("oracle,A*", "oracle is not a weaving pooling"),
    ],
)
def test_weaving_option_is_validated(text, message):
    with pytest.raises(ValueError, match=message):
        parse_weaving(text)
    assert parse_weaving(None) == ("avg", "A*") and parse_weaving("magmax, plain") == ("magmax", "A")


def test_lambda_curves_average_tasks_at_each_lambda(table):
    curves = lambda_curves(table)
    assert list(curves) == [("m1", "s1", "ties")]
    curve = curves[("m1", "s1", "ties")]
    assert curve["lams"] == [0.5, 1.0, 1.5]
    assert curve["mean"] == pytest.approx([0.5, 0.65, 0.65])
    assert curve["tasks"]["b"] == pytest.approx([0.5, 0.55, 0.9])


def test_best_lambda_per_task_is_each_tasks_own_optimum(table):
    best = {e["eval_task"]: (e["lam"], e["accuracy"]) for e in best_lambda_per_task(table)}
    assert best == {"a": (1.0, pytest.approx(0.75)), "b": (1.5, pytest.approx(0.9))}


def test_best_lambda_per_task_averages_seeds_first(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    # seed 0 prefers .5, seed 1 prefers 1; averaged: .55 at .5 vs .4 at 1
    write_oracle(storage, {0.5: {"a": 0.9}, 1.0: {"a": 0.1}}, seed=0)
    write_oracle(storage, {0.5: {"a": 0.2}, 1.0: {"a": 0.7}}, seed=1)
    (entry,) = best_lambda_per_task(results.read_results(storage))
    assert entry["lam"] == 0.5 and entry["accuracy"] == pytest.approx(0.55)


def test_all_skips_what_the_root_cannot_support_but_an_explicit_request_fails(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    write_trial(storage, {"a": 0.5}, pooling="avg")
    write_trial(storage, {"a": 0.4}, pooling="none")
    table = results.read_results(storage)
    tables, notes = build_tables(table, "all", ("merger",))
    assert [t.key for t in tables] == ["leaderboard", "weaving-gain", "pooling-ablation"]
    assert len(notes) == 1 and notes[0].startswith("oracle skipped") and "pooling: oracle" in notes[0]
    with pytest.raises(ValueError, match="oracle trials"):
        build_tables(table, "oracle", ("merger",))
    with pytest.raises(ValueError, match="unknown table.*leaderboard, weaving-gain"):
        build_tables(table, "headline", ("merger",))


def test_weaving_gain_without_a_baseline_says_what_is_missing(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    write_trial(storage, {"a": 0.5}, pooling="avg")
    with pytest.raises(ValueError, match="fixed-λ baseline"):
        weaving_gain_table(results.read_results(storage))
    assert not math.isnan(pooling_ablation_table(results.read_results(storage)).rows[0][3].mean)


def test_paper_tables_flag_a_merger_run_with_several_hyper_parameters(tmp_path):
    storage = StorageRoot.at(tmp_path).ensure()
    write_trial(storage, {"a": 0.4}, pooling="none")
    write_trial(storage, {"a": 0.5}, pooling="avg", merger_params='{"k": 0.1}')
    write_trial(storage, {"a": 0.7}, pooling="avg", merger_params='{"k": 0.2}')
    report = weaving_gain_table(results.read_results(storage), ci=0)
    assert report.notes and "one configuration per merger" in report.notes[0]
    assert report.rows[0][4] == pytest.approx(0.2)  # the pooled value is still reported: .6 − .4


def test_all_tables_share_one_bootstrap_and_match_the_tables_built_alone(table, monkeypatch):
    import benchmark.report.tables as tables_module

    built = []
    real = tables_module.PairedStats

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tables_module, "PairedStats", counting)
    together, _ = build_tables(table, "all", ("merger",))
    assert len(built) == 1  # weaving-gain and oracle both draw intervals from it
    for alone in (build_tables(table, key, ("merger",))[0][0] for key in ("weaving-gain", "oracle")):
        (same,) = [t for t in together if t.key == alone.key]
        assert same.rows == alone.rows  # intervals included (they are part of the cells)
        assert same.notes == alone.notes
