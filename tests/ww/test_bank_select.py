"""Selecting some task vectors of a bank (DG's leave-one-domain-out) without copying the bank."""

import pytest
import torch

import ww
from benchmark.trials.merge_eval import _sub_bank
from ww.bank import BankRows


def _bank(num_tasks=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    layout = [("a.weight", (40, 30)), ("a.bias", (40,)), ("b", (7, 3, 5))]
    size = sum(torch.Size(shape).numel() for _, shape in layout)
    return ww.TaskVectorBank.from_flat(
        torch.randn(num_tasks, size, generator=generator) * 1e-2,
        layout,
        [f"domain_{index}" for index in range(num_tasks)],
    )


def _copied(bank, rows):
    return ww.TaskVectorBank.from_flat(bank.data[list(rows)].clone(), bank.layout, [bank.task_names[r] for r in rows])


@pytest.mark.parametrize("held_out", [0, 1, 2, 3])
def test_leave_one_domain_out_shares_the_banks_storage_and_merges_identically(held_out):
    bank = _bank()
    experts = tuple(row for row in range(len(bank)) if row != held_out)
    sub = _sub_bank(bank, experts)
    # no copy: the selection reads the bank's own storage
    assert sub.data.untyped_storage().data_ptr() == bank.data.untyped_storage().data_ptr()
    assert isinstance(sub, BankRows) == (held_out not in (0, 3))
    assert sub.task_names == tuple(bank.task_names[row] for row in experts)
    reference = _copied(bank, experts)
    for name, params in [("ties", {}), ("pcb", {}), ("magmax", {}), ("dare_ties", {"seed": 3}), ("tsv_m", {})]:
        got, want = ww.merge(name, sub, **params), ww.merge(name, reference, **params)
        for key in want:
            assert torch.equal(got[key], want[key]), (name, key)
    got = ww.weave(sub, "ties", lambdas=[0.3, 0.7], pooling="avg", collaborative=True, seed=1)
    want = ww.weave(reference, "ties", lambdas=[0.3, 0.7], pooling="avg", collaborative=True, seed=1)
    assert all(torch.equal(got[key], want[key]) for key in want)


def test_select_keeps_order_names_and_rejects_bad_tasks():
    bank = _bank()
    assert bank.select([0, 1, 2, 3]) is bank
    picked = bank.select(["domain_3", "domain_1"])
    assert picked.task_names == ("domain_3", "domain_1")
    assert torch.equal(ww.merge("task_arithmetic", picked)["a.bias"], (bank.data[3] + bank.data[1])[1200:1240])
    for bad in ([], [1, 1], [4], ["nope"]):
        with pytest.raises(ValueError):
            bank.select(bad)


def test_a_memory_mapped_bank_selects_without_reading_it_whole(tmp_path):
    bank = _bank()
    ww.save_bank(tmp_path / "bank.safetensors", bank)
    mapped = ww.open_bank(tmp_path / "bank.safetensors")
    sub = mapped.select((0, 2, 3))
    assert sub.stream().release is not None  # the page release of the mapped bank still applies
    want = ww.merge("ties", _copied(bank, (0, 2, 3)))
    got = ww.merge("ties", sub)
    assert all(torch.equal(got[key], want[key]) for key in want)
