"""Leaderboards grouped by any columns: the aggregation order (tasks → trials per seed → seeds),
references and oracle entries kept apart, within-trial groupings (eval task, λ)."""

from __future__ import annotations

import pytest

from benchmark.report.leaderboard import DEFAULT_BY, GROUPABLE, leaderboard_rows, leaderboard_table, parse_by
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from tests.benchmark.report.fixtures import EXPERT, paper_root, write_oracle, write_references, write_trial


@pytest.fixture
def storage(tmp_path):
    return StorageRoot.at(tmp_path / "root").ensure()


def _only(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, found
    return found[0]


def test_pooled_trials_are_averaged_per_seed_before_the_spread_over_seeds(storage):
    # per-trial task means: avg s0 .5, randmix s0 .7, avg s1 .6, randmix s1 .8
    write_trial(storage, {"a": 0.4, "b": 0.6}, pooling="avg", seed=0)
    write_trial(storage, {"a": 0.6, "b": 0.8}, pooling="randmix", seed=0)
    write_trial(storage, {"a": 0.5, "b": 0.7}, pooling="avg", seed=1)
    write_trial(storage, {"a": 0.7, "b": 0.9}, pooling="randmix", seed=1)
    (row,) = leaderboard_rows(results.read_results(storage), ("merger",))
    assert row["n_seeds"] == 2 and row["n_trials"] == 4
    assert row["accuracy"] == pytest.approx(0.65)
    # per-seed means .6 and .7 → sample std .0707; a flat std over the 4 trials would be .129
    assert row["accuracy_std"] == pytest.approx(0.0707107, abs=1e-6)


def test_normalised_accuracy_is_the_mean_of_per_task_ratios(storage):
    write_trial(storage, {"a": 0.4, "b": 0.6}, expert_accuracy=None, normalized_accuracy=None, key="k")
    table = results.read_results(storage)
    (no_expert,) = leaderboard_rows(table)
    assert no_expert["normalized"] != no_expert["normalized"]  # NaN: nothing to normalise by
    results.write_part(
        storage,
        [
            {**table.to_pylist()[0], "accuracy": 0.4, "expert_accuracy": 0.8, "normalized_accuracy": 0.5},
            {**table.to_pylist()[1], "accuracy": 0.6, "expert_accuracy": 0.5, "normalized_accuracy": 1.2},
        ],
        "k",
    )
    (row,) = leaderboard_rows(results.read_results(storage))
    assert row["normalized"] == pytest.approx(0.85)  # ratio of means would be .5/.65 = .769


def test_default_grouping_is_one_row_per_method_and_variant(storage):
    write_trial(storage, {"a": 0.5}, pooling="avg", collaborative=True)
    write_trial(storage, {"a": 0.3}, pooling="avg", collaborative=False)
    write_trial(storage, {"a": 0.2}, pooling="none")
    rows = leaderboard_rows(results.read_results(storage))
    assert [(r["pooling"], r["variant"]) for r in rows] == [("avg", "A*"), ("avg", "A"), ("none", "-")]
    assert [r["accuracy"] for r in rows] == pytest.approx([0.5, 0.3, 0.2])
    assert rows[2]["lambda"] == "1" and rows[0]["lambda"] == "0.5–1.5·3"
    assert DEFAULT_BY == ("model", "setup", "merger", "pooling", "variant")


def test_references_and_oracle_are_never_pooled_with_merged_models(storage):
    write_references(storage, "m1", "s1")
    write_trial(storage, {"a": 0.5, "b": 0.5}, pooling="avg")
    write_oracle(storage, {0.5: {"a": 0.9, "b": 0.9}})
    rows = leaderboard_rows(results.read_results(storage), ("setup",))
    assert {r["kind"]: round(r["accuracy"], 6) for r in rows} == {
        "expert": EXPERT,
        "zeroshot": 0.15,
        "merged": 0.5,
        "oracle": 0.9,
    }
    assert _only(rows, kind="oracle")["uses_test_data"] is True
    assert _only(rows, kind="merged")["uses_test_data"] is False


def test_oracle_takes_the_best_task_mean_lambda_with_ties_to_the_smallest(storage):
    # task means: λ .5 → .5, λ 1 → .65, λ 1.5 → .65 (tie) ; per seed the oracle is λ 1
    write_oracle(storage, {0.5: {"a": 0.5, "b": 0.5}, 1.0: {"a": 0.75, "b": 0.55}, 1.5: {"a": 0.4, "b": 0.9}})
    table = results.read_results(storage)
    (row,) = leaderboard_rows(table)
    assert row["accuracy"] == pytest.approx(0.65)
    assert row["lams"] == [1.0] and row["lambda"] == "oracle λ=1 (test data)"
    # grouped by eval task: each task's accuracy at the trial's oracle λ, not each task's own best
    per_task = leaderboard_rows(table, ("eval_task",))
    assert {r["eval_task"]: r["accuracy"] for r in per_task} == pytest.approx({"a": 0.75, "b": 0.55})
    # grouped by λ: the whole sweep
    per_lam = leaderboard_rows(table, ("lam",))
    assert {r["lam"]: r["accuracy"] for r in per_lam} == pytest.approx({0.5: 0.5, 1.0: 0.65, 1.5: 0.65})


def test_oracle_lambda_is_chosen_per_seed(storage):
    write_oracle(storage, {0.5: {"a": 0.9}, 1.0: {"a": 0.1}}, seed=0)
    write_oracle(storage, {0.5: {"a": 0.2}, 1.0: {"a": 0.7}}, seed=1)
    (row,) = leaderboard_rows(results.read_results(storage))
    assert row["accuracy"] == pytest.approx(0.8) and row["lams"] == [0.5, 1.0]
    assert row["lambda"] == "oracle λ=0.5/1 (test data)"


def test_error_rows_do_not_enter_the_aggregates(storage):
    write_trial(storage, {"a": 0.5}, pooling="avg")
    write_trial(storage, {"a": 0.0}, pooling="avg", status="error", error="boom")
    (row,) = leaderboard_rows(results.read_results(storage))
    assert row["accuracy"] == pytest.approx(0.5) and row["n_trials"] == 1


def test_sections_are_the_context_columns_and_rows_sort_best_first_within_them(storage):
    write_trial(storage, {"a": 0.2}, setup="s1", merger="x")
    write_trial(storage, {"a": 0.9}, setup="s2", merger="y")
    write_trial(storage, {"a": 0.4}, setup="s1", merger="z")
    report = leaderboard_table(results.read_results(storage), ("merger", "setup"))
    assert report.sections == 1 and [c.label for c in report.columns][:2] == ["setup", "merger"]
    assert [(r[0], r[1]) for r in report.rows] == [("s1", "z"), ("s1", "x"), ("s2", "y")]
    only_context = leaderboard_table(results.read_results(storage), ("setup",))
    assert only_context.sections == 0


def test_by_accepts_known_columns_and_names_valid_choices_otherwise():
    assert parse_by(None) == DEFAULT_BY
    assert parse_by(" merger , pooling,merger") == ("merger", "pooling")
    with pytest.raises(ValueError, match="unknown column.*colour.*valid: model, pretrained"):
        parse_by("merger,colour")
    with pytest.raises(ValueError, match="at least one"):
        parse_by(",")
    assert "eval_task" in GROUPABLE and "accuracy" not in GROUPABLE


def test_pooling_different_hyper_parameters_of_a_merger_is_flagged(storage):
    write_trial(storage, {"a": 0.5}, merger_params='{"k": 0.1}')
    write_trial(storage, {"a": 0.7}, merger_params='{"k": 0.2}')
    table = results.read_results(storage)
    (row,) = leaderboard_rows(table)
    assert row["mixed_params"] and row["accuracy"] == pytest.approx(0.6)
    assert any("ties pool trials with different merger_params" in n for n in leaderboard_table(table).notes)
    split = leaderboard_table(table, ("merger", "merger_params"))
    assert not split.notes and len(split.rows) == 2


def test_paper_root_holds_every_trial_and_reference_as_its_own_part(tmp_path):
    storage = paper_root(tmp_path)
    table = results.read_results(storage)
    # 16 trials × 2 tasks + 8 reference parts × 2 tasks + oracle 3 λ × 2 tasks
    assert table.num_rows == 16 * 2 + 8 * 2 + 6
    assert len(results.trial_status(storage)) == 16 + 8 + 1
    assert set(table.column("lambda_policy").to_pylist()) == {"fixed", "weave", "oracle", "reference"}
