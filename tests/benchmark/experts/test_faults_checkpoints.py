"""Bad checkpoints: refused before any trial starts, naming the expert (or file) and the tensor.

Experts are written by the harness and carry a checksum in their manifest, so damage done after
publication (a truncated copy, flipped bytes, a foreign file dropped in place) is detected when the
bank is built — or, for truncation, by the preflight before any work. Foreign checkpoints go through
safetensors or ``torch.load(weights_only=True)`` only; a pickle that would run code is refused
without running it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from rich.console import Console

from benchmark.data import fake
from benchmark.experts import store as expert_store
from benchmark.experts.store import CorruptExpertError
from benchmark.model.pretrained import ForeignCheckpointError, NonFiniteWeightsError, load_base_model, load_state_file
from benchmark.pipeline import print_plan, run_spec
from benchmark.results import store as results
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import ModelSpec, parse_spec
from benchmark.trials.banks import build_bank
from tests.conftest import tiny_spec_dict


def _theta0() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 3, 2, 2, generator=generator),
        "ln.weight": torch.ones(8),
        "proj": torch.randn(8, 4, generator=generator),
    }


@pytest.fixture
def store(tmp_path):
    """Three healthy experts of the tiny spec's plan, written through the store, and their θ0."""
    storage = StorageRoot.at(tmp_path / "root").ensure()
    plan = build_plan(parse_spec(tiny_spec_dict()))
    theta0 = _theta0()
    for i, job in enumerate(plan.experts):
        expert_store.save_expert(
            job, storage, {k: v + 0.01 * (i + 1) for k, v in theta0.items()}, {"test_accuracy": 0.5}
        )
    build_bank(plan.experts, theta0, storage)  # healthy: accepted
    return storage, plan, theta0


def _rewrite(store, state_of) -> str:
    """Replace the second expert by a well-formed store entry holding ``state_of(θ0)``; return its task."""
    storage, plan, theta0 = store
    job = plan.experts[1]
    expert_store.save_expert(job, storage, state_of({k: v + 0.5 for k, v in theta0.items()}), {"test_accuracy": 0.5})
    return job.task


def _damage(store, edit) -> str:
    """Edit the bytes of the second expert's published file behind the store's back; return its task."""
    storage, plan, _ = store
    path = plan.experts[1].path(storage)
    path.write_bytes(edit(path.read_bytes()))
    return plan.experts[1].task


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) - 64  # inside the last tensor's values: the header still parses
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 4]) + data[middle + 4 :]


STATE_CASES = {
    "wrong-architecture": (
        lambda s: {**s, "extra.weight": torch.zeros(2)},
        ForeignCheckpointError,
        "does not match θ0: unexpected tensor 'extra.weight'",
    ),
    "missing-tensor": (
        lambda s: {k: v for k, v in s.items() if k != "proj"},
        ForeignCheckpointError,
        "does not match θ0: missing tensor 'proj'",
    ),
    "shape-mismatch": (
        lambda s: {**s, "proj": s["proj"][:, :3]},
        ForeignCheckpointError,
        "tensor 'proj' has shape (8, 3), expected (8, 4)",
    ),
    "dtype-mismatch": (
        lambda s: {**s, "ln.weight": s["ln.weight"].half()},
        ForeignCheckpointError,
        "tensor 'ln.weight' has dtype torch.float16, expected torch.float32",
    ),
    "nan": (
        lambda s: {**s, "ln.weight": torch.where(torch.arange(8) == 3, float("nan"), s["ln.weight"])},
        NonFiniteWeightsError,
        "tensor 'ln.weight' holds 1 non-finite value(s) (NaN",
    ),
    "inf": (
        lambda s: {**s, "proj": s["proj"].index_fill(0, torch.tensor([0, 1]), float("inf"))},
        NonFiniteWeightsError,
        "tensor 'proj' holds 8 non-finite value(s) (Inf",
    ),
}


@pytest.mark.parametrize("state_of, error, message", STATE_CASES.values(), ids=STATE_CASES.keys())
def test_an_expert_that_does_not_fit_theta0_is_refused_when_the_bank_is_built(store, state_of, error, message):
    task = _rewrite(store, state_of)
    storage, plan, theta0 = store
    with pytest.raises(error) as info:
        build_bank(plan.experts, theta0, storage)
    assert f"expert {task} (seed 0) at {plan.experts[1].path(storage)}" in str(info.value)
    assert message in str(info.value)


FILE_CASES = {
    "truncated": (lambda data: data[: len(data) // 2], "truncated or overwritten"),
    "garbage-header": (lambda data: b"\xff" * 16 + data[16:], "SHA-256 differs"),
    "flipped-bytes": (_flip_middle, "SHA-256 differs"),
}


@pytest.mark.parametrize("edit, detail", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_a_damaged_expert_file_is_refused_naming_it_and_how_to_retrain(store, edit, detail):
    task = _damage(store, edit)
    storage, plan, theta0 = store
    with pytest.raises(CorruptExpertError) as info:
        build_bank(plan.experts, theta0, storage)
    message = str(info.value)
    assert f"expert {task} (seed 0) at {plan.experts[1].path(storage)} is corrupt" in message and detail in message
    assert f"delete it and {plan.experts[1].manifest_path(storage)} and run the spec again" in message


def test_a_damaged_expert_without_a_recorded_checksum_is_still_refused(store):
    storage, plan, theta0 = store
    manifest = plan.experts[1].manifest_path(storage)
    old = {k: v for k, v in json.loads(manifest.read_text()).items() if k not in ("sha256", "bytes")}
    manifest.write_text(json.dumps(old))  # as written before checksums existed
    _damage(store, lambda data: b"\xff" * 16 + data[16:])
    with pytest.raises(CorruptExpertError, match="not a readable safetensors file"):
        build_bank(plan.experts, theta0, storage)


@pytest.mark.parametrize(
    "edit", [FILE_CASES["truncated"][0], FILE_CASES["garbage-header"][0]], ids=["truncated", "garbage-header"]
)
def test_the_preflight_refuses_a_truncated_or_overwritten_expert_before_any_work(store, edit, monkeypatch):
    task = _damage(store, edit)
    storage, plan, _ = store
    monkeypatch.setattr("benchmark.pipeline.init_ray", lambda: pytest.fail("the run started"))
    with pytest.raises(CorruptExpertError, match=f"expert {task} .* is corrupt"):
        run_spec(plan.spec, storage, dry_run=True, console=Console(quiet=True))
    with pytest.raises(CorruptExpertError):
        run_spec(plan.spec, storage, console=Console(quiet=True))


def test_a_missing_expert_file_is_not_an_expert_and_is_trained_again(store):
    storage, plan, theta0 = store
    job = plan.experts[1]
    job.path(storage).unlink()  # the manifest stays behind
    assert not expert_store.is_done(job, storage)
    experts_todo, _ = print_plan(plan, storage, Console(quiet=True))
    assert experts_todo == [job]
    with pytest.raises(FileNotFoundError, match=f"expert {job.task}"):
        build_bank(plan.experts, theta0, storage)


def test_a_nan_expert_stops_the_run_before_any_trial_or_row_is_written(finished_tiny_run, tmp_path):
    spec, done, _, _ = finished_tiny_run
    root = tmp_path / "root"
    shutil.copytree(done.root, root, ignore=shutil.ignore_patterns("runs", "results"))
    storage = StorageRoot.at(root)
    job = build_plan(spec).experts[2]
    state = expert_store.load_expert(job, storage)
    first = sorted(state)[0]
    state[first] = state[first].clone().fill_(float("nan"))
    expert_store.save_expert(job, storage, state, {"test_accuracy": 0.5})  # a well-formed, checksummed NaN expert
    with pytest.raises(NonFiniteWeightsError, match=f"expert {job.task} .* tensor '{first}' holds"):
        run_spec(spec, storage, console=Console(quiet=True))
    assert results.read_results(storage).num_rows == 0


# --- foreign checkpoints ------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates a file, the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_malicious_pickle_is_refused_and_provably_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "payload": _Payload(marker)}, evil)
    shutil.copyfile(evil, tmp_path / "evil.safetensors")
    fake.register_tiny_clip()

    with pytest.raises(ForeignCheckpointError, match="needs code execution"):
        load_state_file(evil)
    with pytest.raises(ForeignCheckpointError, match="not a readable safetensors file"):
        load_state_file(tmp_path / "evil.safetensors")
    with pytest.raises(ForeignCheckpointError, match="refused"):
        load_base_model(ModelSpec(name=fake.TINY_CLIP, pretrained=str(evil)), StorageRoot.at(tmp_path / "root"))
    assert not marker.exists()

    torch.load(evil, weights_only=False)  # control: the file is a live exploit for an unsafe loader
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_truncated_foreign_checkpoint_says_so(tmp_path, suffix):
    path = tmp_path / f"tiny{suffix}"
    fake.save_tiny_clip(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ForeignCheckpointError, match="truncated or corrupted"):
        load_state_file(path)


def test_a_fine_tune_that_diverges_fails_as_an_expert_and_stores_nothing(finished_tiny_run, tmp_path):
    _, done, _, _ = finished_tiny_run
    root = tmp_path / "root"
    shutil.copytree(done.root, root, ignore=shutil.ignore_patterns("runs", "results", "experts"))  # θ0, tensors
    spec_dict = tiny_spec_dict(tasks=["digits", "shapes"], mergers=["task_arithmetic"], poolings=["none"])
    spec_dict["setups"][0]["finetune"].update(lr=1e30, checkpoint_every=0)  # AdamW at this rate overflows at once
    spec = parse_spec(spec_dict)
    storage = StorageRoot.at(root)
    summary = run_spec(spec, storage, console=Console(quiet=True))
    assert summary.experts_trained == 0 and summary.trials_blocked == 1
    assert len(summary.experts_failed) == 2
    assert all("diverged" in failure and "non-finite" in failure for failure in summary.experts_failed), (
        summary.experts_failed
    )
    assert not any(expert_store.is_done(job, storage) for job in build_plan(spec).experts)
