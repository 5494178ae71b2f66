"""Banks that do not fit in memory: streamed expert by expert, routed through a memory-mapped file.

The file route must give the same bank (bit for bit) and the same accuracies as the object-store
route; the build must never hold more than one expert next to its output; a damaged bank file is
rebuilt from the experts, or refused when the rebuild cannot reproduce the driver's bytes.
"""

from __future__ import annotations

import os
import shutil
import weakref

import pytest
import torch
from rich.console import Console

import ww
from benchmark.experts import store as expert_store
from benchmark.pipeline import print_plan, run_spec
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import parse_spec
from benchmark.trials.banks import (
    BankFileError,
    bank_file_path,
    build_bank,
    build_bank_file,
    choose_route,
)
from tests.conftest import tiny_spec_dict


def _theta0() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 2, 2, generator=generator),
        "ln.weight": torch.ones(8),
        "proj": torch.randn(8, 4, generator=generator),
        "steps": torch.tensor(3),
    }


@pytest.fixture
def store(tmp_path):
    """Three experts of the tiny spec's plan, written through the store, and their θ0."""
    storage = StorageRoot.at(tmp_path / "root").ensure()
    plan = build_plan(parse_spec(tiny_spec_dict()))
    theta0 = _theta0()
    generator = torch.Generator().manual_seed(1)
    for job in plan.experts:
        state = {
            k: v + 0.1 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in theta0.items()
        }
        expert_store.save_expert(job, storage, state, {"test_accuracy": 0.5})
    return storage, plan, theta0


def test_routes_auto_by_the_fraction_of_the_object_store():
    assert choose_route("auto", 0.25, 100, 1000) == "object_store"
    assert choose_route("auto", 0.25, 251, 1000) == "file"
    assert choose_route("auto", 0.25, 100, None) == "file"  # size unknown: the route that always fits
    assert choose_route("object_store", 0.25, 10**12, 1000) == "object_store"
    assert choose_route("file", 0.25, 1, 1000) == "file"


def test_both_routes_hold_the_task_vectors_ww_would_stack(store):
    storage, plan, theta0 = store
    expected = ww.TaskVectorBank.from_state_dicts(
        {job.task: ww.task_vector(expert_store.load_expert(job, storage), theta0) for job in plan.experts}
    )
    in_memory = build_bank(plan.experts, theta0, storage).to_ww()
    shared = build_bank_file(plan.experts, theta0, storage, "bank-key")
    on_disk = shared.open(storage, theta0)
    assert on_disk.file_backed
    for bank in (in_memory, on_disk):
        assert bank.layout == expected.layout and bank.task_names == expected.task_names
        assert torch.equal(bank.data, expected.data)
    assert bank_file_path(storage, "bank-key").stat().st_size == shared.bytes
    assert theta0["proj"].equal(_theta0()["proj"])  # θ0 was not modified by the in-place subtraction


def _track_live_experts(monkeypatch) -> list[int]:
    """Count the experts alive (their tensors not freed) each time the builder loads another one."""
    live: set[int] = set()
    seen: list[int] = []
    load = expert_store.load_expert

    def tracked(job, storage):
        seen.append(len(live))  # experts still alive when the next one is loaded
        state = load(job, storage)
        for tensor in state.values():
            live.add(id(tensor))
            weakref.finalize(tensor, live.discard, id(tensor))
        return state

    monkeypatch.setattr(expert_store, "load_expert", tracked)
    return seen


@pytest.mark.parametrize("route", ["object_store", "file"])
def test_the_build_never_holds_two_experts(store, monkeypatch, route):
    storage, plan, theta0 = store
    seen = _track_live_experts(monkeypatch)
    if route == "file":
        build_bank_file(plan.experts, theta0, storage, "bank-key")
    else:
        build_bank(plan.experts, theta0, storage)
    assert seen == [0] * len(plan.experts)


def test_the_file_is_written_through_the_writer_row_by_row(store, monkeypatch):
    storage, plan, theta0 = store
    rows: list[int] = []
    real = ww.BankWriter.write

    def write(self, values):
        rows.append(self._written // self.num_params)
        return real(self, values)

    monkeypatch.setattr(ww.BankWriter, "write", write)
    build_bank_file(plan.experts, theta0, storage, "bank-key")
    assert rows == sorted(rows) and set(rows) == set(range(len(plan.experts)))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_record"])
def test_a_damaged_bank_file_is_rebuilt_from_the_experts(store, damage):
    storage, plan, theta0 = store
    shared = build_bank_file(plan.experts, theta0, storage, "bank-key")
    path = bank_file_path(storage, "bank-key")
    if damage == "truncate":
        os.truncate(path, shared.bytes - 100)
    elif damage == "flip":
        with open(path, "r+b") as handle:
            handle.seek(shared.bytes - 10)
            byte = handle.read(1)
            handle.seek(shared.bytes - 10)
            handle.write(bytes([byte[0] ^ 0xFF]))
    else:
        path.with_name(path.name + ".json").unlink()
    messages: list[str] = []
    reopened = shared.open(storage, theta0, log=messages.append)
    assert messages and "rebuilding" in messages[0] and str(path) in messages[0]
    assert torch.equal(reopened.data, build_bank(plan.experts, theta0, storage).to_ww().data)
    assert build_bank_file(plan.experts, theta0, storage, "bank-key") == shared


def test_a_node_whose_rebuild_differs_from_the_drivers_refuses_it(store):
    storage, plan, theta0 = store
    shared = build_bank_file(plan.experts, theta0, storage, "bank-key")
    other_theta0 = {k: v + 1 if v.is_floating_point() else v for k, v in theta0.items()}  # another node's θ0
    bank_file_path(storage, "bank-key").unlink()
    with pytest.raises(BankFileError, match="differs from the driver's.*same storage root"):
        shared.open(storage, other_theta0)
    assert not bank_file_path(storage, "bank-key").exists()  # nothing wrong is left for the next trial


def test_plan_shows_the_route_and_the_threshold(tmp_path):
    spec = parse_spec(tiny_spec_dict(resources={"prepare_cpus": 1, "trial_cpus": 1, "bank_route": "file"}))
    console = Console(record=True, width=200)
    print_plan(build_plan(spec), StorageRoot.at(tmp_path), console)
    text = console.export_text()
    assert "bank → file" in text and "3 task vector(s)" in text and "bank route file: file (forced)" in text
    auto = parse_spec(tiny_spec_dict(resources={"prepare_cpus": 1, "trial_cpus": 1, "bank_store_fraction": 0.1}))
    console = Console(record=True, width=200)
    print_plan(build_plan(auto), StorageRoot.at(tmp_path), console)
    text = console.export_text()
    assert "bank → object store" in text and "file above 10% of the object store" in text


def _accuracies(storage: StorageRoot) -> dict[tuple[str, str], float]:
    table = results.read_results(storage).to_pylist()
    return {
        (r["trial_key"], r["eval_task"]): r["accuracy"]
        for r in table
        if r["status"] == "ok" and r["lambda_policy"] != "reference"
    }


def test_the_file_route_end_to_end_gives_the_object_store_accuracies(finished_tiny_run, tmp_path):
    spec, finished, _, _ = finished_tiny_run
    root = tmp_path / "root"
    shutil.copytree(finished.root, root, ignore=shutil.ignore_patterns("runs", "results"))
    storage = StorageRoot.at(root)
    forced = tiny_spec_dict(
        mergers=[{"name": "ties", "params": {"k": 0.2}}],
        poolings=["none", "avg"],
        resources={"prepare_cpus": 1, "trial_cpus": 1, "bank_route": "file"},
    )
    console = Console(record=True, width=200)
    summary = run_spec(parse_spec(forced), storage, console=console)
    assert summary.trials_run == 2
    key = build_plan(parse_spec(forced)).trials[0].bank_key
    assert bank_file_path(storage, key).is_file()
    assert "bank → file" in console.export_text()
    by_file, by_store = _accuracies(storage), _accuracies(finished)
    assert by_file and all(by_file[k] == by_store[k] for k in by_file)
