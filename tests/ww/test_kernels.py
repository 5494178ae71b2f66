"""ww.kernels: the torch.compile-d block kernels compute what their eager twins compute.

Compiles for real (inductor, the C++ compiler on the PATH): a test session pays a few seconds per
kernel once, and inductor's on-disk cache makes later sessions cheaper.
"""

import dataclasses
import importlib
import warnings

import pytest
import torch

import ww
from ww import kernels
from ww.engine import blockops, compiling, selection
from ww.engine.blockops import largest_magnitude
from ww.mergers import breadcrumbs, dare
from ww.mergers.ties import ties_block

NO_COMPILER = "no C++ compiler for inductor"
needs_compiler = pytest.mark.skipif(not kernels.compiler_available(), reason=NO_COMPILER)


@pytest.fixture(autouse=True)
def _compiled_code_really_ran(request):
    """Every test gated on a compiler must have run compiled code: a failed compile falls back to
    eager silently (same results), which would otherwise let these tests pass on eager alone."""
    gated = any(
        mark.name == "skipif" and mark.kwargs.get("reason") == NO_COMPILER for mark in request.node.iter_markers()
    )
    if not gated:
        yield
        return
    runs, failed = kernels.compiled_runs(), set(kernels.failures())
    yield
    after = kernels.compiled_runs()
    assert any(count > runs.get(name, 0) for name, count in after.items()), "no compiled kernel ran"
    new_failures = {name: error for name, error in kernels.failures().items() if name not in failed}
    assert not new_failures, f"compiling failed (the test ran eager): {new_failures}"


def _compiled(kernel):
    """The kernel's compiled form, run single-threaded like ww's block workers run it."""

    def run(*args):
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return kernel.compiled(*args)
        finally:
            torch.set_num_threads(previous)

    return run


def _strided(rows, columns, generator, scale=1e-3):
    """A ``[rows, columns]`` view into a wider tensor, as blocks of a bank are."""
    wide = torch.randn(rows, columns + 37, generator=generator) * scale
    return wide[:, 11 : 11 + columns]


@needs_compiler
@pytest.mark.parametrize("shape", [(2, 1), (4, 17), (4, 4099), (20, 1000)])  # few T: one compile each
def test_compiled_ties_block_matches_eager(shape):
    tau = _strided(*shape, torch.Generator().manual_seed(shape[1]))
    thresholds = tau.abs().quantile(0.7, dim=1, keepdim=True)
    thresholds[0] = 0  # a task keeping everything
    expected = ties_block(tau, thresholds)
    got = _compiled(ties_block)(tau, thresholds)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)  # the sum order of T = 20 may differ


@needs_compiler
@pytest.mark.parametrize("contiguous_positions", [True, False])
@pytest.mark.parametrize("p", [0.5, 0.3, 0.9])
def test_compiled_dare_drop_draws_exactly_the_eager_mask(contiguous_positions, p):
    generator = torch.Generator().manual_seed(1)
    tau = _strided(7, 5003, generator)
    cutoff, scale = round(p * 65536) - 32768, 1 / (1 - p)
    keys = dare.pair_keys(3, "visual.proj", 7)
    if contiguous_positions:
        args = (tau, None, torch.tensor(123_456), keys, cutoff, scale)
    else:
        args = (tau, torch.randint(0, 1 << 30, (5003,), generator=generator), None, keys, cutoff, scale)
    expected = dare.drop_block(*args)
    assert torch.equal(_compiled(dare.drop_block)(*args), expected)
    kept = (expected != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.02
    torch.testing.assert_close(_compiled(dare.drop_sum_block)(*args), expected.sum(dim=0), rtol=1e-6, atol=1e-12)


@needs_compiler
def test_compiled_largest_magnitude_keeps_magmax_tie_rule():
    values = torch.tensor([[1.0, -2.0, 3.0, 0.0], [-1.0, 2.0, -3.0, 0.0], [0.5, 1.0, 2.0, -0.0]])
    got = _compiled(largest_magnitude)(values)
    assert torch.equal(got, torch.tensor([-1.0, 2.0, -3.0, 0.0]))  # ties go to the later task
    tau = _strided(9, 3001, torch.Generator().manual_seed(2))
    assert torch.equal(_compiled(largest_magnitude)(tau), largest_magnitude(tau))


@needs_compiler
@pytest.mark.parametrize("absolute", [True, False])
def test_compiled_bracket_summary_counts_exactly(absolute):
    tau = _strided(5, 16 * 777, torch.Generator().manual_seed(3))
    values = tau.abs() if absolute else tau
    low = values.quantile(0.6, dim=1, keepdim=True)
    high = values.quantile(0.64, dim=1, keepdim=True)  # wide: some cells hold more than two
    body, _ = selection._grouped(tau)
    over, from_low, count, largest, smallest, total = _compiled(selection.bracket_summary)(body, high, low, absolute)
    assert torch.equal(total, values[:, : 16 * 777].abs().max())  # finite iff the block is: validation
    assert torch.equal(over.long(), (values > high).sum(dim=1))
    assert torch.equal(from_low.long(), (values >= low).sum(dim=1))
    inside = (values >= low) & (values <= high)
    grouped, grouped_inside = values.view(5, 16, 777), inside.view(5, 16, 777)
    assert torch.equal(count.long(), grouped_inside.sum(dim=1))
    assert torch.equal(largest, torch.where(grouped_inside, grouped, -torch.inf).amax(dim=1))
    assert torch.equal(smallest, torch.where(grouped_inside, grouped, torch.inf).amin(dim=1))
    rows, found = selection._collect_flagged(tau, count, largest, smallest, high, low, absolute)
    for row in range(5):  # the same multiset as a plain mask, crowded cells (> 2 entries) included
        assert torch.equal(found[rows == row].sort().values, values[row][inside[row]].sort().values)
    assert int(count.max()) > 2


def _bank(num_tasks=4, generator_seed=0):
    generator = torch.Generator().manual_seed(generator_seed)
    layout = [("blocks.0.weight", (120, 700)), ("blocks.0.bias", (120,)), ("proj", (333, 97))]
    rows = []
    for _ in range(num_tasks):
        parts = [torch.randn(shape, generator=generator).mul_(1e-3).reshape(-1) for _, shape in layout]
        rows.append(torch.cat(parts))
    return ww.TaskVectorBank.from_flat(torch.stack(rows), layout)


@needs_compiler
@pytest.mark.parametrize(
    "merger", ["ties", "dare_ta", "dare_ties", "magmax", "pcb", "consensus", "randmix", "breadcrumbs"]
)
def test_merges_with_compiled_kernels_match_eager(merger):
    bank = _bank()  # 116 k parameters per task: the sampled-bracket selection runs, not the direct one
    with kernels.use("eager"):
        expected = ww.merge(merger, bank)
    with kernels.use("compiled"):
        got = ww.merge(merger, bank)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-9)


@needs_compiler
def test_compiled_selection_is_exact_in_memory_and_out_of_core(tmp_path):
    bank = _bank(num_tasks=4, generator_seed=5)
    data = bank.data
    ranks = [data.shape[1] // 5] * 4
    expected = data.abs().sort(dim=1, descending=True).values[:, ranks[0] - 1].unsqueeze(1)
    resident = bank.stream()
    memory_mapped = dataclasses.replace(resident, sampler=None)  # the windowed sample, as from disk
    with kernels.use("compiled"):
        for stream in (resident, memory_mapped):
            assert torch.equal(selection.kth_largest_magnitudes(stream, ranks), expected)
        ww.save_bank(tmp_path / "bank.safetensors", bank)
        on_disk = ww.merge("ties", ww.open_bank(tmp_path / "bank.safetensors"))
        in_memory = ww.merge("ties", bank)
    for name in in_memory:
        assert torch.equal(on_disk[name], in_memory[name])


@needs_compiler
def test_compiled_selection_of_two_ranks_reads_each_block_once_and_is_exact(monkeypatch):
    bank = _bank(num_tasks=3, generator_seed=11)
    data = bank.data
    total = data.shape[1]
    ranks = torch.tensor([[total // 100, total - total // 100]] * 3)  # PCB's two quantiles
    ordered = data.abs().sort(dim=1, descending=True).values
    expected = torch.stack([ordered[:, rank - 1] for rank in ranks[0].tolist()], dim=1)
    calls = []
    original = selection.bracket_summary_pair.compiled
    monkeypatch.setattr(
        selection.bracket_summary_pair, "compiled", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    with kernels.use("compiled"):
        got = selection.kth_largest(bank.stream(), selection.magnitudes, ranks, nonnegative=True)
    assert torch.equal(got, expected)
    assert calls  # the paired kernel ran (one call per block instead of two)


@needs_compiler
@pytest.mark.parametrize("merger", ["ties", "pcb", "dare_ties"])
def test_compiled_merges_reject_non_finite_task_vectors_like_eager(merger):
    bank = _bank(num_tasks=4, generator_seed=9)
    bank.data[1, 70_001] = float("nan")  # inside blocks.0.weight, far from a block's start
    messages = []
    for mode in ("eager", "compiled"):
        with kernels.use(mode), pytest.raises(ValueError, match="non-finite") as raised:
            ww.merge(merger, bank)
        messages.append(str(raised.value))
    assert messages[0] == messages[1] and "'blocks.0.weight'" in messages[0] and "70001" in messages[0]


def test_mode_comes_from_the_environment_and_use(monkeypatch):
    monkeypatch.delenv("WW_KERNELS", raising=False)
    assert kernels.mode() == "auto"
    monkeypatch.setenv("WW_KERNELS", "Eager")
    assert kernels.mode() == "eager"
    assert not kernels.compiled_for(10**9)
    with kernels.use("compiled"):
        assert kernels.compiled_for(10)
        with kernels.use("eager"):
            assert not kernels.compiled_for(10**9)
        assert kernels.mode() == "compiled"
    monkeypatch.setenv("WW_KERNELS", "fast")
    with pytest.raises(ValueError, match="WW_KERNELS must be one of"):
        kernels.mode()
    with pytest.raises(ValueError, match="kernel mode must be one of"):
        with kernels.use("turbo"):
            pass


def test_auto_compiles_only_large_streams_and_only_with_a_compiler(monkeypatch):
    monkeypatch.delenv("WW_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "compiler_available", lambda: True)
    with kernels.expect_many_merges():  # the one-shot rule: tests/ww/test_one_shot.py
        assert not kernels.compiled_for(kernels.AUTO_MIN_PARAMS - 1)
        assert kernels.compiled_for(kernels.AUTO_MIN_PARAMS)
        monkeypatch.setattr(kernels, "compiler_available", lambda: False)
        assert not kernels.compiled_for(10**9)
        assert ties_block.for_params(10**9) is ties_block.eager


def test_a_failed_compile_warns_once_and_falls_back_to_eager(monkeypatch):
    def broken_compile(function, **options):
        def run(*args, **kwargs):
            raise RuntimeError("InductorError: no working C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    kernel = compiling.Kernel(lambda x: x * 2, name="double")
    with kernels.use("compiled"):
        run = kernel.for_params(10)
        with pytest.warns(RuntimeWarning, match="compiling kernel 'double' failed.*WW_KERNELS=eager"):
            assert torch.equal(run(torch.ones(3)), torch.full((3,), 2.0))
        assert kernel.failure is not None
        assert kernel.for_params(10) is kernel.eager  # no second attempt, no second warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(kernel.compiled(torch.ones(2)), torch.full((2,), 2.0))


def test_bad_input_to_a_compiled_kernel_raises_the_eager_error_and_keeps_compiling(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda function, **options: function)  # "compiled" = eager here
    kernel = compiling.Kernel(lambda a, b: a + b, name="add")
    with pytest.raises(RuntimeError, match="size of tensor"):
        kernel.compiled(torch.ones(2), torch.ones(3))
    assert kernel.failure is None
    assert torch.equal(kernel.compiled(torch.ones(2), torch.ones(2)), torch.full((2,), 2.0))


@needs_compiler
@pytest.mark.parametrize("collaborative", [True, False])
@pytest.mark.parametrize("merger", ["task_arithmetic", "ties"])
def test_weaving_with_compiled_randmix_pooling_draws_the_same_candidates(merger, collaborative):
    bank = _bank(num_tasks=4, generator_seed=7)
    lambdas = [round(0.1 * (index + 1), 10) for index in range(20)]
    with kernels.use("eager"):
        expected = ww.weave(bank, merger, lambdas=lambdas, pooling="randmix", collaborative=collaborative, seed=3)
    with kernels.use("compiled"):
        got = ww.weave(bank, merger, lambdas=lambdas, pooling="randmix", collaborative=collaborative, seed=3)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-9)
    if merger == "task_arithmetic":  # the picks themselves are exact: with 4 tasks M is the same sum
        assert all(torch.equal(got[name], expected[name]) for name in expected)


@needs_compiler
@pytest.mark.parametrize("collaborative", [True, False])
@pytest.mark.parametrize("merger", ["task_arithmetic", "weight_averaging", "consensus"])
def test_weaving_a_block_kernel_merger_with_randmix_merges_and_pools_in_one_compiled_loop(merger, collaborative):
    # 5 tasks and rows of 700: blocks whose eager sum ATen reorders (a cascade), which the fused
    # loop does not; its M is the sequential sum (or that over T), the same for any block cut
    bank = _bank(num_tasks=5, generator_seed=11)
    lambdas = [0.05 * (index + 1) for index in range(20)]
    block_kernels = {
        "task_arithmetic": "sum_of_tasks",
        "weight_averaging": "mean_of_tasks",
        "consensus": "consensus_block",
    }
    module = importlib.import_module(f"ww.mergers.{merger}")
    ww.pooling._MERGE_AND_PICK.clear()
    with kernels.use("compiled"):
        got = ww.weave(bank, merger, lambdas=lambdas, pooling="randmix", collaborative=collaborative, seed=4)
        merged_alone = ww.MERGERS[merger](bank)
    fused = ww.pooling._MERGE_AND_PICK[getattr(module, block_kernels[merger])]
    assert fused._compiled is not None and fused.failure is None
    if merger == "consensus":  # its compiled merge is the same loop
        merged = merged_alone
    else:
        merged = bank.data[0].clone()
        for row in bank.data[1:]:
            merged += row
        merged = merged if merger == "task_arithmetic" else merged / 5
        torch.testing.assert_close(merged, merged_alone, rtol=1e-6, atol=0)
    candidates = ww.candidates.Candidates(bank.data if collaborative else None, merged, lambdas, bank.layout)
    with kernels.use("eager"):
        expected = bank.unflatten(ww.POOLINGS["randmix"](candidates, seed=4))
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


@needs_compiler
@pytest.mark.parametrize("merger", ["task_arithmetic", "consensus"])
def test_fused_randmix_weaving_validates_like_the_merge(merger):
    bank = _bank(num_tasks=3, generator_seed=9)
    bank.data[2, 70_001] = float("inf")
    with kernels.use("compiled"), pytest.raises(ValueError, match="non-finite.*70001"):
        ww.weave(bank, merger, pooling="randmix")
    with kernels.use("compiled"), pytest.raises(ValueError, match="needs at least 4 task vectors"):
        ww.weave(_bank(num_tasks=3), "consensus", pooling="randmix", merger_params={"k": 4})


def test_fused_randmix_weaving_beyond_128_candidates_falls_back_to_the_same_draws():
    # not gated on a compiler: the fused loop must not run here (nothing compiled does)
    bank = _bank(num_tasks=3, generator_seed=2)
    lambdas = [0.01 * (index + 1) for index in range(130)]  # 133 candidates: beyond the kernel's draws
    with kernels.use("eager"):
        expected = ww.weave(bank, "task_arithmetic", lambdas=lambdas, pooling="randmix", seed=5)
    before = kernels.compiled_runs()
    with kernels.use("compiled"):
        got = ww.weave(bank, "task_arithmetic", lambdas=lambdas, pooling="randmix", seed=5)
    fused = [
        name
        for name, count in kernels.compiled_runs().items()
        if name.startswith("randmix_pooling_") and count > before.get(name, 0)
    ]
    assert fused == []
    assert all(torch.equal(got[name], expected[name]) for name in expected)


@needs_compiler
def test_select_by_index_picks_every_option_compiled_and_eager():
    for count in (1, 2, 3, 5, 8, 13, 28):
        index = torch.arange(count).repeat(3)
        options = [torch.full(index.shape, float(10 * option + 1)) for option in range(count)]
        expected = index * 10.0 + 1
        select = compiling.Kernel(blockops.select_by_index, name=f"select_{count}")
        assert torch.equal(select(options, index), expected)
        assert torch.equal(select.compiled(options, index), expected)
    with pytest.raises(ValueError, match="at least one option"):
        blockops.select_by_index([], torch.zeros(2, dtype=torch.int64))


@needs_compiler
@pytest.mark.parametrize("length", [7, 768])  # one compile each (a 62-count loop)
def test_per_row_selection_finds_exact_order_statistics_with_ties_compiled_and_eager(length):
    generator = torch.Generator().manual_seed(length)
    # coarse magnitudes (many ties), zeros, and a spread of exponents
    values = torch.randint(0, 6, (37, length), generator=generator).float() * 10.0 ** torch.randint(
        -6, 2, (37, 1), generator=generator
    )
    keys = values.view(torch.int32)
    descending = keys.sort(dim=-1, descending=True).values
    for first, second in {(length, 1), (1, length), ((length + 1) // 2, max(1, length // 3))}:
        for select in (breadcrumbs.largest_pair.compiled, breadcrumbs.largest_pair.eager):
            found_first, found_second = select(keys, first, second)
            assert torch.equal(found_first[:, 0], descending[:, first - 1])
            assert torch.equal(found_second[:, 0], descending[:, second - 1])


@needs_compiler
@pytest.mark.parametrize("gamma", [0.01, 0.0])
def test_compiled_breadcrumbs_equals_eager_bit_for_bit(gamma):
    bank = _bank(num_tasks=5, generator_seed=3)
    bank.data[:, ::3] = (bank.data[:, ::3] * 2e3).round() / 2e3  # ties in magnitude within rows
    with kernels.use("eager"):
        expected = ww.merge("breadcrumbs", bank, gamma=gamma)
    with kernels.use("compiled"):
        got = ww.merge("breadcrumbs", bank, gamma=gamma)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
