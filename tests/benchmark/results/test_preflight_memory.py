"""A run whose banks or trials cannot fit in memory on their route is refused before any work.

One line naming what needs the memory, how much, how much there is, and the fix (the file route,
fewer tasks or concurrent trials, a larger node).
"""

from __future__ import annotations

import pytest
import yaml
from rich.console import Console

from benchmark.cli import main
from benchmark.pipeline import run_spec
from benchmark.results.preflight import (
    BankPlan,
    InsufficientMemoryError,
    NodeMemory,
    check_memory,
    encoder_bytes,
    plan_banks,
)
from benchmark.results.storage import StorageRoot
from benchmark.spec.plan import build_plan
from benchmark.spec.schema import ResourcesSpec, parse_spec
from tests.conftest import tiny_spec_dict

GB = 2**30


def _bank(route: str, tasks: int = 8, encoder: int = GB // 4, trial: int = GB, dg: bool = False) -> BankPlan:
    return BankPlan(
        key=f"k-{route}-{tasks}",
        label=f"ViT-B-32 · mtl8 · seed {tasks}",
        n_tasks=tasks,
        bytes=tasks * encoder,
        encoder_bytes=encoder,
        trial_bytes=trial,
        route=route,
        dg=dg,
    )


def _check(banks, resources=None, n_trials=4, store=8 * GB, driver=16 * GB, nodes=(NodeMemory(2, 0, 16 * GB),)):
    check_memory(
        banks, resources or ResourcesSpec(), n_trials, store_bytes=store, driver_available=driver, nodes=list(nodes)
    )


def test_object_store_banks_beyond_the_store_are_refused_naming_the_file_route():
    with pytest.raises(InsufficientMemoryError) as info:
        _check([_bank("object_store"), _bank("object_store", tasks=7)], store=3 * GB)
    message = str(info.value)
    assert "2 bank(s) routed through Ray's object store need 3.8 GB" in message and "holds 3.0 GB" in message
    assert "resources.bank_route: file" in message and "\n" not in message
    _check([_bank("file"), _bank("file", tasks=7)], store=3 * GB)  # the same banks as files: no store needed


def test_a_bank_the_driver_cannot_build_in_memory_is_refused():
    with pytest.raises(
        InsufficientMemoryError,
        match=r"building bank ViT-B-32 · mtl8 · seed 8 \(8 tasks\) in the "
        r"driver's memory needs 2.5 GB .* but 2.0 GB .* is available; "
        r"set resources.bank_route: file",
    ):
        _check([_bank("object_store")], store=100 * GB, driver=2 * GB)
    _check([_bank("file")], store=100 * GB, driver=2 * GB)  # streamed to disk: one expert at a time


def test_trials_a_node_cannot_hold_at_once_are_refused_naming_how_many_fit():
    nodes = [NodeMemory(cpus=8, gpus=0, memory=5 * GB)]
    with pytest.raises(InsufficientMemoryError) as info:
        _check([_bank("file", trial=2 * GB)], n_trials=20, nodes=nodes)
    message = str(info.value)
    assert "8 trial(s) at once on a node need 16.0 GB" in message and "leaves 5.0 GB" in message
    assert "resources.max_concurrent_trials: 2" in message
    _check([_bank("file", trial=2 * GB)], ResourcesSpec(max_concurrent_trials=2), n_trials=20, nodes=nodes)
    _check([_bank("file", trial=2 * GB)], ResourcesSpec(trial_cpus=4), n_trials=20, nodes=nodes)
    with pytest.raises(InsufficientMemoryError, match="the bank minus the held-out domain"):
        _check([_bank("file", trial=6 * GB, dg=True)], n_trials=1, nodes=nodes)


def test_the_plan_sizes_banks_and_trials_from_theta0():
    spec = parse_spec(tiny_spec_dict())
    plan = build_plan(spec)
    encoder = encoder_bytes(spec.models[0])
    (bank,) = plan_banks(plan, plan.trials, store_bytes=10**12)
    assert bank.bytes == 3 * encoder and bank.route == "object_store" and bank.trial_bytes > 3 * encoder
    (bank,) = plan_banks(plan, plan.trials, store_bytes=3 * encoder)  # above a quarter of the store
    assert bank.route == "file"


def test_a_run_whose_bank_cannot_fit_is_refused_before_any_work(ray_session, tmp_path, monkeypatch):
    spec = parse_spec(tiny_spec_dict(resources={"prepare_cpus": 1, "trial_cpus": 1, "bank_route": "object_store"}))
    monkeypatch.setattr("benchmark.trials.banks.available_memory", lambda: 4096)
    monkeypatch.setattr("benchmark.model.prepare.prepare_remote", lambda *a: pytest.fail("work started"))
    with pytest.raises(InsufficientMemoryError, match="4.0 KB .* is available; set resources.bank_route: file"):
        run_spec(spec, StorageRoot.at(tmp_path / "root"), console=Console(quiet=True))
    assert not list((tmp_path / "root" / "experts").rglob("*.safetensors"))


def test_the_cli_reports_it_in_one_line_with_exit_code_2(ray_session, tmp_path, monkeypatch, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(tiny_spec_dict(resources={"prepare_cpus": 1, "trial_cpus": 1, "bank_route": "file"}))
    )
    monkeypatch.setattr("benchmark.pipeline.ray_nodes_memory", lambda: [NodeMemory(4, 0, 1024)])
    monkeypatch.setattr("benchmark.model.prepare.prepare_remote", lambda *a: pytest.fail("work started"))
    assert main(["run", str(path), "--root", str(tmp_path / "root")]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "trial(s) at once on a node need" in lines[0] and "leaves 1.0 KB" in lines[0]
