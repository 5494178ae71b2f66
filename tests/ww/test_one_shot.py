"""A one-shot merge (a script calling ww.merge once): when ``auto`` compiles, and state dicts read in place.

Not timed: the figures are in docs/PERF.md (``run_bench.py perf merge --one-shot``).
"""

import textwrap
from pathlib import Path

import pytest
import torch

import ww
from tests.fresh_python import run_fresh
from ww import kernels
from ww.bank import StateDictTasks

needs_compiler = pytest.mark.skipif(not kernels.compiler_available(), reason="no C++ compiler for inductor")


def _state_dicts(num_tasks=3, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (6, 5), "a.bias": (6,), "b.weight": (4, 3, 2), "c": (1,)}
    return [
        {name: torch.randn(shape, generator=generator).to(dtype) for name, shape in shapes.items()}
        for _ in range(num_tasks)
    ]


@pytest.fixture
def auto_with_compiler(monkeypatch, tmp_path):
    monkeypatch.delenv("WW_KERNELS", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(kernels, "compiler_available", lambda: True)


def test_auto_compiles_a_single_merge_only_when_it_is_large_and_the_cache_holds_its_kernels(auto_with_compiler):
    big = kernels.AUTO_MIN_PARAMS
    assert not kernels.compiled_for(big)  # no job, no declaration: eager
    with kernels.job("merge-ties-T8", kernels.ONE_SHOT_MIN_ENTRIES):
        assert not kernels.compiled_for(big)  # large, but the cache is cold
    kernels.cache_marker("merge-ties-T8").parent.mkdir(parents=True)
    kernels.cache_marker("merge-ties-T8").touch()
    with kernels.job("merge-ties-T8", kernels.ONE_SHOT_MIN_ENTRIES):
        assert kernels.compiled_for(big)  # large and warm
        assert not kernels.compiled_for(big - 1)  # a small stream inside stays eager
    with kernels.job("merge-ties-T8", kernels.ONE_SHOT_MIN_ENTRIES - 1):
        assert not kernels.compiled_for(big)  # warm but small: loading the kernels would not pay
    with kernels.job("merge-ties-T4", kernels.ONE_SHOT_MIN_ENTRIES):
        assert not kernels.compiled_for(big)  # another T: other kernel variants, not known to be cached


def test_declaring_many_merges_compiles_encoder_sized_streams_even_with_a_cold_cache(auto_with_compiler, monkeypatch):
    with kernels.expect_many_merges():
        assert kernels.many_merges_expected()
        assert kernels.compiled_for(kernels.AUTO_MIN_PARAMS)
        assert not kernels.compiled_for(kernels.AUTO_MIN_PARAMS - 1)
        with kernels.use("eager"):
            assert not kernels.compiled_for(10**9)
        monkeypatch.setattr(kernels, "compiler_available", lambda: False)
        assert not kernels.compiled_for(10**9)
    assert not kernels.many_merges_expected()


def test_the_cache_marker_lives_in_inductors_cache_directory(auto_with_compiler, tmp_path):
    marker = kernels.cache_marker("weave-ties-avg-collaborative-T8")
    assert marker.is_relative_to(tmp_path / "inductor") and torch.__version__.replace("+", "_") in str(marker)


FRESH_PROCESS = textwrap.dedent("""
    import json, sys, torch, ww
    from ww import kernels
    kernels.AUTO_MIN_PARAMS = 1                 # the tiny bank counts as an encoder here
    kernels.ONE_SHOT_MIN_ENTRIES = int(sys.argv[1])
    tau = [{"w": torch.randn(64, 32, generator=torch.Generator().manual_seed(t))} for t in range(3)]
    with kernels.use("eager"):
        expected = ww.merge("magmax", tau)["w"]
    one_shot = ww.merge("magmax", tau)["w"]
    after_one = kernels.compiled_kernels()
    with kernels.expect_many_merges():
        many = ww.merge("magmax", tau)["w"]
    print(json.dumps({"one_shot": after_one, "many": kernels.compiled_kernels(),
                      "equal": bool(torch.equal(one_shot, expected) and torch.equal(many, expected)),
                      "marker": kernels.cache_marker("merge-magmax-T3").exists()}))
""")


def _fresh(cache: Path, one_shot_min_entries: int) -> dict:
    return run_fresh(
        FRESH_PROCESS, str(one_shot_min_entries), env={"TORCHINDUCTOR_CACHE_DIR": str(cache)}, drop=("WW_KERNELS",)
    )


@needs_compiler
@pytest.mark.slow  # one cold compile of MagMax's kernel, three fresh interpreters
def test_a_fresh_process_merges_once_eager_and_compiles_when_many_merges_are_declared(tmp_path):
    cache = tmp_path / "inductor"
    first = _fresh(cache, one_shot_min_entries=1)
    assert first["one_shot"] == []  # empty cache: the single merge runs eager
    assert first["many"] == ["largest_magnitude"] and first["equal"]
    assert first["marker"]  # the compiled merge is recorded in the cache directory
    second = _fresh(cache, one_shot_min_entries=1)
    assert second["one_shot"] == ["largest_magnitude"] and second["equal"]  # warm and (here) large: compiled
    third = _fresh(cache, one_shot_min_entries=1 << 62)
    assert third["one_shot"] == []  # warm but small: eager


def test_merging_state_dicts_reads_them_in_place_and_matches_the_bank():
    tau = _state_dicts()
    snapshot = [{name: t.clone() for name, t in sd.items()} for sd in tau]
    bank = ww.TaskVectorBank.from_state_dicts(tau)
    for name in ("ties", "magmax", "pcb", "breadcrumbs", "tsv_m", "dare_ties"):
        from_dicts, from_bank = ww.merge(name, tau), ww.merge(name, bank)
        assert list(from_dicts) == list(from_bank)
        assert all(torch.equal(from_dicts[key], from_bank[key]) for key in from_bank), name
    woven = ww.weave(tau, "ties", pooling="randmix", seed=3)
    expected = ww.weave(bank, "ties", pooling="randmix", seed=3)
    assert all(torch.equal(woven[key], expected[key]) for key in expected)
    woven = ww.weave({"x": tau[0], "y": tau[1]}, "task_arithmetic", pooling="ties")  # a merger as pooling
    expected = ww.weave(
        ww.TaskVectorBank.from_state_dicts({"x": tau[0], "y": tau[1]}), "task_arithmetic", pooling="ties"
    )
    assert all(torch.equal(woven[key], expected[key]) for key in expected)
    assert all(torch.equal(sd[name], snapshot[i][name]) for i, sd in enumerate(tau) for name in sd)


def test_state_dict_tasks_read_any_range_and_scattered_positions_in_the_compute_dtype():
    tau = _state_dicts(dtype=torch.float16)
    tasks = StateDictTasks(tau)
    stream = tasks.stream()
    bank = ww.TaskVectorBank.from_state_dicts(tau)
    assert tasks.dtype == torch.float16 and stream.dtype == torch.float32
    assert torch.equal(stream.read_all(), bank.data.float())  # a range across every tensor
    for block in stream.blocks(block_entries=12):  # blocks inside tensors
        assert torch.equal(stream.read(block), bank.data[:, block.start : block.stop].float())
    sample = ww.engine.streaming.sample_blocks(tasks.layout, 20, seed=1)
    for sampled in sample:
        assert torch.equal(stream.read_sample(sampled), bank.data[:, sampled.flat_positions()].float())
    assert ww.merge("ties", tau)["a.weight"].dtype == torch.float16


def test_state_dict_tasks_keep_non_contiguous_inputs_correct():
    tau = _state_dicts()
    transposed = [{**sd, "a.weight": sd["a.weight"].t().contiguous().t()} for sd in tau]  # same values, strided
    assert not transposed[0]["a.weight"].is_contiguous()
    merged = ww.merge("magmax", transposed)
    expected = ww.merge("magmax", tau)
    assert all(torch.equal(merged[key], expected[key]) for key in expected)


def test_state_dict_input_errors_are_the_banks():
    tau = _state_dicts()
    with pytest.raises(ValueError, match="single state dict"):
        ww.merge("ties", tau[0])
    with pytest.raises(ValueError, match="task vector 1 lacks tensor 'c'"):
        ww.merge("ties", [tau[0], {k: v for k, v in tau[1].items() if k != "c"}])
    bad = [dict(sd) for sd in tau]
    bad[2]["a.bias"] = bad[2]["a.bias"].clone()
    bad[2]["a.bias"][1] = float("nan")
    with pytest.raises(ValueError, match="task vector 'task_2' has a non-finite value .* 'a.bias'"):
        ww.merge("magmax", bad)


def test_the_heap_guard_trims_only_growth_beyond_what_a_pass_keeps(monkeypatch):
    """``ww.engine.streaming._HeapGuard``: a trim when resident memory grew by more than the slack beyond
    the bytes a pass keeps on purpose (a map's output); memory still resident after a trim is live
    and becomes the floor, so live memory does not make every block trim."""
    from ww.engine import streaming

    resident, trims, after_trim = [1000], [], [0]

    def trim():
        trims.append(resident[0])
        resident[0] = after_trim[0]

    monkeypatch.setattr(streaming, "TRIM_SLACK_BYTES", 100)
    monkeypatch.setattr(streaming, "_return_free_memory", trim)
    monkeypatch.setattr(streaming._HeapGuard, "_resident", lambda self: resident[0])
    guard = streaming._HeapGuard()
    guard.fd = -1  # as if /proc were readable (``_resident`` is replaced)
    try:
        resident[0] = 1500
        guard.finished(kept=450)  # 50 beyond the kept output: within the slack
        assert trims == []
        resident[0], after_trim[0] = 1700, 1460
        guard.finished()  # 250 beyond: trimmed, 10 left is not live memory worth a new floor
        assert trims == [1700] and guard.baseline == 1000
        resident[0], after_trim[0] = 1700, 1540
        guard.finished()  # trimmed again, 90 left (over half the slack): the new floor
        assert trims == [1700, 1700] and guard.baseline == 1090
        resident[0] = 1600
        guard.finished()  # 60 above the floor and the output: no trim
        assert len(trims) == 2
        resident[0] = 1700
        guard.finished()
        assert len(trims) == 3
    finally:
        guard.fd = None
