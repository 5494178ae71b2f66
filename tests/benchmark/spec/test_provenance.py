"""Provenance in every key: a changed method or stage re-keys exactly the work it reaches, a spec's
spelling does not, and the report never pools rows that different code produced. No Ray."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
import uuid
from types import MappingProxyType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ww
from benchmark.cli import main
from benchmark.model.head_cache import head_path
from benchmark.model.pretrained import base_key
from benchmark.report.leaderboard import leaderboard_rows, newest_revisions
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.spec import keys
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import DataSpec, ModelSpec, SpecError, parse_spec
from benchmark.trials import eval_cache
from tests.benchmark.report.fixtures import write_trial
from tests.conftest import tiny_spec_dict
from ww import registry


def _spec(**overrides):
    spec = {"mergers": ["task_arithmetic", "ties", "consensus"], "poolings": ["none", "avg", "randmix"]}
    spec.update(overrides)
    return parse_spec(tiny_spec_dict(**spec))


def _keys_by(plan) -> dict[tuple, str]:
    return {(t.merger, t.pooling, t.collaborative, t.seed): t.key for t in plan.trials}


def _changed(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {axes for axes in before if before[axes] != after[axes]}


def _replace_merger(monkeypatch, name: str, **fields) -> None:
    monkeypatch.setitem(registry._MERGERS, name, dataclasses.replace(registry._MERGERS[name], **fields))


# --- (1) a merger's revision or default re-keys exactly its trials ---------------------------------


def test_bumping_a_merger_revision_rekeys_exactly_its_trials(monkeypatch):
    before = _keys_by(build_plan(_spec()))
    _replace_merger(monkeypatch, "ties", revision=registry._MERGERS["ties"].revision + 1)
    after = _keys_by(build_plan(_spec()))
    assert _changed(before, after) == {axes for axes in before if axes[0] == "ties"}
    assert len(_changed(before, after)) == 3  # none, avg, randmix


def test_changing_a_default_rekeys_exactly_the_trials_that_omit_it(monkeypatch):
    spec = dict(mergers=["task_arithmetic", "ties", {"name": "consensus", "params": {"k": 2}}])
    before = build_plan(_spec(**spec))
    defaults = dict(registry._MERGERS["ties"].defaults, k=0.35)
    _replace_merger(monkeypatch, "ties", defaults=MappingProxyType(defaults))
    consensus = dict(registry._MERGERS["consensus"].defaults, k=3)  # written in the spec: no effect
    _replace_merger(monkeypatch, "consensus", defaults=MappingProxyType(consensus))
    after = build_plan(_spec(**spec))
    assert _changed(_keys_by(before), _keys_by(after)) == {a for a in _keys_by(before) if a[0] == "ties"}
    ties = next(t for t in after.trials if t.merger == "ties")
    assert ties.merger_params["k"] == 0.35  # the trial records (and runs) the value actually applied


def test_a_pooling_revision_rekeys_the_trials_it_pools(monkeypatch):
    from ww import pooling

    before = _keys_by(build_plan(_spec(poolings=["none", "avg", "randmix", "consensus"])))
    bumped = dataclasses.replace(pooling._POOLINGS["avg"], revision=pooling._POOLINGS["avg"].revision + 1)
    monkeypatch.setitem(pooling._POOLINGS, "avg", bumped)
    after = _keys_by(build_plan(_spec(poolings=["none", "avg", "randmix", "consensus"])))
    assert _changed(before, after) == {a for a in before if a[1] == "avg"}
    # a merger's revision reaches the trials it pools as well as those it merges
    _replace_merger(monkeypatch, "consensus", revision=9)
    again = _keys_by(build_plan(_spec(poolings=["none", "avg", "randmix", "consensus"])))
    assert _changed(after, again) == {a for a in after if "consensus" in a[:2]}


def test_registry_refuses_a_bad_revision():
    with pytest.raises(TypeError, match="revision must be a positive int"):
        registry.merger(name="never_registered", citation="-", revision=0)
    assert ww.MERGERS["consensus"].revision == 2  # its fp32 results changed once already
    assert ww.MERGERS["task_arithmetic"].revision == 1


# --- (2) the spelling of a spec does not change a key -----------------------------------------------


def test_a_default_written_or_omitted_is_the_same_trial():
    k = ww.MERGERS["ties"].defaults["k"]
    omitted = build_plan(_spec(mergers=["ties"]))
    written = build_plan(_spec(mergers=[{"name": "ties", "params": {"k": k}}]))
    assert [t.key for t in omitted.trials] == [t.key for t in written.trials]
    with pytest.raises(SpecError, match="duplicated mergers"):
        _spec(mergers=["ties", {"name": "ties", "params": {"k": k}}])


def test_a_random_mergers_omitted_seed_is_the_trials_seed():
    omitted = build_plan(_spec(mergers=["dare_ta"], seeds=[0, 1]))
    written = build_plan(_spec(mergers=[{"name": "dare_ta", "params": {"seed": 0}}], seeds=[0, 1]))
    same = {t.seed for t, u in zip(omitted.trials, written.trials) if t.key == u.key}
    assert same == {0}  # seed 1: omitted means "seed 1", written means "seed 0"
    assert {t.merger_params["seed"] for t in omitted.trials} == {0, 1}


# --- (3) plugins are keyed by their source -----------------------------------------------------------


PLUGIN = """
from ww.registry import merger


@merger(name="{name}", citation="test plugin")
def plugin_mean(tasks, *, scale: float = 1.0):
    return tasks.map(lambda tau, block: tau.mean(dim=0) * scale)
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    module = f"prov_plugin_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{module}.py"
    path.write_text(textwrap.dedent(PLUGIN.format(name=module)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module, path
    registry._MERGERS.pop(module, None)
    sys.modules.pop(module, None)


def test_editing_a_plugin_rekeys_only_its_trials(plugin):
    module, path = plugin
    spec = dict(plugins=[module], mergers=["task_arithmetic", module], poolings=["none", "avg", module])
    before = _keys_by(build_plan(_spec(**spec)))
    assert _keys_by(build_plan(_spec(**spec))) == before  # stable while the file is unchanged
    path.write_text(path.read_text() + "\n# a comment is an edit too: the digest cannot know it is harmless\n")
    after = _keys_by(build_plan(_spec(**spec)))
    # its own trials and the trials it pools; task_arithmetic's none/avg trials are untouched
    assert _changed(before, after) == {a for a in before if module in a[:2]}
    untouched = {("task_arithmetic", "none", None, 0), ("task_arithmetic", "avg", True, 0)}
    assert untouched.isdisjoint(_changed(before, after))
    for trial in build_plan(_spec(**spec)).trials:
        expected = {f"merger:{module}"} if trial.merger == module else set()
        expected |= {f"pooling:{module}"} if trial.pooling == module else set()
        assert set(trial.revisions["sources"]) == expected


# --- (4) stage revisions -----------------------------------------------------------------------------


def _bump(monkeypatch, stage: str) -> None:
    monkeypatch.setattr(keys, "REVISIONS", MappingProxyType({**keys.REVISIONS, stage: keys.REVISIONS[stage] + 1}))


def test_finetune_revision_rekeys_experts_and_through_them_every_trial(monkeypatch):
    before = build_plan(_spec())
    _bump(monkeypatch, "finetune")
    after = build_plan(_spec())
    assert {e.key for e in before.experts}.isdisjoint(e.key for e in after.experts)
    assert {t.bank_key for t in before.trials}.isdisjoint(t.bank_key for t in after.trials)
    assert {t.key for t in before.trials}.isdisjoint(t.key for t in after.trials)


@pytest.mark.parametrize("stage", ["heads", "eval"])
def test_heads_and_eval_revisions_rekey_trials_not_experts(monkeypatch, stage):
    before = build_plan(_spec())
    _bump(monkeypatch, stage)
    after = build_plan(_spec())
    assert [e.key for e in before.experts] == [e.key for e in after.experts]
    assert {t.key for t in before.trials}.isdisjoint(t.key for t in after.trials)


def test_heads_revision_rekeys_head_files_and_toy_stages_their_artifacts(monkeypatch, tmp_path):
    storage = StorageRoot.at(tmp_path)
    task = tiny_spec_dict()["setups"][0]["tasks"][0]
    toy = ModelSpec(name="ww-toy-vit", pretrained="toy")
    head, base = head_path(storage, "b", task), base_key(toy)
    tensors = eval_cache.cache_folder(storage, task, "test", DataSpec())
    _bump(monkeypatch, "heads")
    assert head_path(storage, "b", task) != head and base_key(toy) == base
    _bump(monkeypatch, "pretrain")
    assert base_key(toy) != base and eval_cache.cache_folder(storage, task, "test", DataSpec()) == tensors
    _bump(monkeypatch, "toy_data")
    assert eval_cache.cache_folder(storage, task, "test", DataSpec()) != tensors


def test_an_unknown_stage_is_named():
    with pytest.raises(KeyError, match="no revision for stage 'finetuning'"):
        keys.revision("finetuning")


# --- (5) results record revisions; the report keeps each configuration's newest ----------------------


def _revisions(merger: int, finetune: int = 1) -> dict:
    revisions = {"merger": merger, "pooling": 1, "eval": 1, "heads": 1, "finetune": finetune, "sources": {}}
    return dict(
        revisions=json.dumps(revisions),
        merger_revision=merger,
        pooling_revision=1,
        eval_revision=1,
        heads_revision=1,
        finetune_revision=finetune,
    )


@pytest.fixture
def storage(tmp_path):
    return StorageRoot.at(tmp_path / "root").ensure()


def test_report_keeps_the_newest_revision_of_each_configuration_and_says_so(storage):
    write_trial(storage, {"a": 0.2, "b": 0.2}, merger="consensus", key="old", **_revisions(1))
    write_trial(storage, {"a": 0.6, "b": 0.6}, merger="consensus", key="new", **_revisions(2))
    write_trial(storage, {"a": 0.4, "b": 0.4}, merger="ties", key="ties", **_revisions(1))  # one revision only
    write_trial(storage, {"a": 0.9, "b": 0.9}, merger="ties", key="ties-s1", seed=1, **_revisions(1, finetune=2))
    table, notes = newest_revisions(results.read_results(storage))
    assert sorted(set(table.column("trial_key").to_pylist())) == ["new", "ties", "ties-s1"]
    assert len(notes) == 1 and notes[0].startswith("1 trial(s) of consensus left out")
    rows = leaderboard_rows(table, ("merger",))
    assert {r["merger"]: round(r["accuracy"], 6) for r in rows} == {"consensus": 0.6, "ties": 0.65}
    # without the filter the two consensus revisions would have averaged to 0.4
    pooled = leaderboard_rows(results.read_results(storage), ("merger",))
    assert {r["merger"]: round(r["accuracy"], 6) for r in pooled}["consensus"] == 0.4


def test_the_report_command_applies_it_in_every_format(storage, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    write_trial(storage, {"a": 0.2}, merger="consensus", key="old", **_revisions(1))
    write_trial(storage, {"a": 0.6}, merger="consensus", key="new", **_revisions(2))
    out = tmp_path / "board.md"
    assert main(["report", str(storage.root), "--format", "markdown", "--out", str(out)]) == 0
    text = out.read_text()
    assert "60.0" in text and "20.0" not in text and "40.0" not in text
    assert "1 trial(s) of consensus left out" in text


def test_rows_of_the_old_schema_read_as_unknown_revision_and_yield_to_newer_ones(storage):
    # a part written before revisions were recorded: the old columns only, spec-written params
    write_trial(storage, {"a": 0.6}, merger="ties", merger_params='{"k":0.2}', key="new", **_revisions(1))
    new_row = results.read_results(storage).to_pylist()[0]
    old_schema = pa.schema([f for f in results.SCHEMA if not f.name.endswith("revision") and f.name != "revisions"])
    old = {
        **{f.name: new_row[f.name] for f in old_schema},
        "trial_key": "old",
        "schema_version": 1,
        "merger_params": "{}",
        "accuracy": 0.1,
    }
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema), results.part_path(storage, "m1", "s1", "old"))
    table = results.read_results(storage)
    by_key = {r["trial_key"]: r for r in table.to_pylist()}
    assert by_key["old"]["merger_revision"] is None and by_key["old"]["revisions"] is None
    # ties's default k (0.2) resolves the old "{}" to the new row's configuration: the old one yields
    kept, notes = newest_revisions(table)
    assert kept.column("trial_key").to_pylist() == ["new"] and notes
    # alone, an old row is still reported
    results.part_path(storage, "m1", "s1", "new").unlink()
    kept, notes = newest_revisions(results.read_results(storage))
    assert kept.column("trial_key").to_pylist() == ["old"] and not notes


def test_trial_rows_record_the_revisions_their_key_hashed():
    from benchmark.trials.merge_eval import base_row, reference_rows

    plan = build_plan(_spec(mergers=["consensus"], poolings=["none", "randmix"]))
    woven = next(t for t in plan.trials if t.pooling == "randmix")
    row = base_row(woven)
    assert (row["merger_revision"], row["pooling_revision"], row["eval_revision"], row["finetune_revision"]) == (
        2,
        ww.POOLINGS["randmix"].revision,
        keys.REVISIONS["eval"],
        keys.REVISIONS["finetune"],
    )
    assert json.loads(row["revisions"]) == json.loads(json.dumps(woven.revisions))
    assert base_row(next(t for t in plan.trials if t.pooling == "none"))["pooling_revision"] is None
    refs = reference_rows(woven, {"a": {"zeroshot_accuracy": 0.1}}, {"a": 0.8})
    ref = refs["expert"][0]
    assert ref["merger_revision"] is None and ref["finetune_revision"] == keys.REVISIONS["finetune"]


# --- end to end: ``run`` re-runs what a bump made stale, nothing else --------------------------------


@pytest.mark.ray
def test_run_recomputes_exactly_the_trials_of_a_bumped_merger(finished_tiny_run, tmp_path, monkeypatch):
    import shutil

    from rich.console import Console

    from benchmark.pipeline import run_spec

    spec, done, _, _ = finished_tiny_run
    copy = StorageRoot.at(tmp_path / "copy").ensure()  # the session's root stays as other tests expect it
    for folder in ("cache", "experts", "results"):
        shutil.copytree(done.root / folder, copy.root / folder, dirs_exist_ok=True)
    old = {t.key: t for t in build_plan(spec).trials}
    _replace_merger(monkeypatch, "ties", revision=registry._MERGERS["ties"].revision + 1)
    summary = run_spec(spec, copy, console=Console(record=True, width=200))
    assert summary.experts_trained == 0
    assert summary.trials_run == sum(t.merger == "ties" for t in old.values())
    table = results.read_results(copy)
    ties = {r["merger_revision"] for r in table.to_pylist() if r["merger"] == "ties"}
    assert ties == {1, 2}  # both revisions are in the dataset ...
    kept, notes = newest_revisions(table)
    left = {r["trial_key"] for r in kept.to_pylist()}
    assert not left & {k for k, t in old.items() if t.merger == "ties"}  # ... only the newest is reported
    assert {k for k, t in old.items() if t.merger != "ties"} <= left and "ties" in notes[0]
