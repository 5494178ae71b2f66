"""The spectral mergers (TSV-M, Iso-C, Iso-CTS) work on one task's tensor at a time.

They used to decompose a whole ``[T, m, n]`` fp64 stack of every matrix, so a one-shot merge held
several models above its inputs, more with every task (docs/PERF.md, "One-shot spectral mergers").
Not timed: the figures are in docs/PERF.md (``run_bench.py perf merge --one-shot``).
"""

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ww
from tests.fresh_python import run_fresh
from ww.engine.streaming import NonFiniteError, TaskRows
from ww.mergers.iso import iso_c_block, iso_cts_block
from ww.mergers.tsv_m import tsv_block

SPECTRAL = {
    "tsv_m": tsv_block,
    "iso_c": iso_c_block,
    "iso_cts": lambda tau, block: iso_cts_block(tau, block, 0.8),
}


def _state_dicts(num_tasks, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"wide": (6, 14), "tall": (12, 5), "bias": (12,), "conv": (4, 3, 2, 2)}
    return [{name: torch.randn(shape, generator=generator) for name, shape in shapes.items()} for _ in range(num_tasks)]


@pytest.mark.parametrize("name", sorted(SPECTRAL))
def test_spectral_mergers_never_read_a_stacked_block_and_match_the_stacked_form(name):
    tasks = _state_dicts(5)
    bank = ww.TaskVectorBank.from_state_dicts(tasks)

    def stacked(block):
        raise AssertionError(f"{name} read the [T, n] block of {block.name!r}")

    stream = replace(bank.stream(), loader=stacked)
    merged = bank.unflatten(ww.MERGERS[name].run(stream, {}))
    for block in bank.stream().blocks("tensors"):
        tau = bank.data[:, block.start : block.stop]
        expected = SPECTRAL[name](tau, block).reshape(block.shape)
        assert torch.equal(merged[block.name], expected), block.name
    assert all(torch.equal(ww.merge(name, tasks)[key], merged[key]) for key in merged)  # state dicts, in place


def test_task_rows_read_rows_lazily_as_views_and_average_like_the_stack():
    tasks = _state_dicts(3)
    bank = ww.TaskVectorBank.from_state_dicts(tasks)
    stream = bank.stream()
    block = next(b for b in stream.blocks("tensors") if b.name == "conv")
    rows = TaskRows(stream, block)
    assert len(rows) == 3 and rows.dtype == torch.float32
    assert rows[1].data_ptr() == bank.data[1, block.start :].data_ptr()  # a view, no copy
    assert torch.equal(rows.mean(columns=5), bank.data[:, block.start : block.stop].mean(dim=0))
    with pytest.raises(IndexError):
        rows[3]


@pytest.mark.parametrize("name", sorted(SPECTRAL))
def test_a_non_finite_entry_is_reported_with_its_task_when_rows_are_read_one_by_one(name):
    tasks = _state_dicts(3)
    tasks[2]["bias"][4] = float("nan")
    with pytest.raises(NonFiniteError, match="'task_2'.*'bias' at flat index 4"):
        ww.merge(name, tasks)


def test_spectral_mergers_still_run_on_streams_without_row_access():
    # a merger as a pooling runs on the candidate stream, which stacks its blocks
    tasks = _state_dicts(3)
    for name in SPECTRAL:
        woven = ww.weave(tasks, "task_arithmetic", pooling=name, lambdas=[0.5, 1.0])
        assert all(torch.isfinite(tensor).all() for tensor in woven.values()), name


MEMORY_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import torch
    import ww

    def status(field):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    rows, columns, matrices = 1024, 512, 3
    model = matrices * rows * columns * 4
    result = {}
    for name in sys.argv[1:]:
        ww.merge(name, [{"w": torch.randn(64, 32)} for _ in range(3)])  # first-call costs out of the way
        for tasks in (2, 16):
            generator = torch.Generator().manual_seed(tasks)
            inputs = [
                {f"m{i}.weight": torch.randn(rows, columns, generator=generator) for i in range(matrices)}
                for _ in range(tasks)
            ]
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # VmHWM := VmRSS
            baseline = status("VmRSS")
            merged = ww.merge(name, inputs)
            result[f"{name}/{tasks}"] = (status("VmHWM") - baseline) / model
            del inputs, merged
    print(json.dumps(result))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak resident memory is read from /proc")
def test_a_one_shot_spectral_merge_holds_as_much_memory_for_16_tasks_as_for_2():
    """Peak resident memory above the inputs, in models, of a fresh process: with the tasks
    decomposed one at a time it does not grow with T. The stacked form kept a ``[T, m, n]`` fp64 copy
    of every matrix in flight, 8 times larger at T = 16 than at T = 2: far beyond the bound's 3
    models, which leaves room for allocator noise."""
    above = run_fresh(MEMORY_PROBE, *sorted(SPECTRAL), env={"WW_WORKERS": "2", "WW_KERNELS": "eager"})
    for name in SPECTRAL:
        assert above[f"{name}/16"] <= above[f"{name}/2"] + 3, above
