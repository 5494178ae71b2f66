"""ww.weave: the identities of docs/METHODS.md §1 (hand cases, then around every merger), randmix's stream,
merger pooling and validation."""

import dataclasses
import math

import pytest
import torch

import ww
from ww.candidates import Candidates
from ww.pooling import randmix

torch.set_num_threads(2)


def _vectors(*rows):
    return [{"v": torch.tensor(row, dtype=torch.float32)} for row in rows]


# Task arithmetic over these two: M = [4, -3, -1].
TAU1 = [1.0, -2.0, 0.5]
TAU2 = [3.0, -1.0, -1.5]


def test_plain_avg_equals_the_merger_at_mean_lambda():
    # TIES hand case of tests/ww/test_mergers.py (k = 0.5): M = [2, 2, -8, -9, 0, 0]; mean(Λ) = 0.6.
    taus = _vectors(
        [2.0, 2.0, 1.0, 5.0, 0.5, -3.0], [2.0, -4.0, 1.0, -1.0, 0.2, 3.0], [-1.0, 2.0, -8.0, -9.0, 0.1, 0.3]
    )
    woven = ww.weave(taus, "ties", lambdas=[0.2, 0.6, 1.0], collaborative=False, merger_params={"k": 0.5})
    torch.testing.assert_close(woven["v"], torch.tensor([1.2, 1.2, -4.8, -5.4, 0.0, 0.0]))


def test_collaborative_avg_is_task_sum_plus_lambda_sum_times_m_over_t_plus_k():
    # (τ1 + τ2 + (0.5 + 1.5)·M) / (2 + 2) = ([4, -3, -1] + [8, -6, -2]) / 4
    woven = ww.weave(_vectors(TAU1, TAU2), "task_arithmetic", lambdas=[0.5, 1.5])
    torch.testing.assert_close(woven["v"], torch.tensor([3.0, -2.25, -0.75]))


def test_default_lambdas_are_used_when_none_are_given():
    # Λ = 0.1..1.0: Σλ = 5.5, K = 10, T = 2 -> (1 + 5.5)·M / 12 = 6.5/12·M
    woven = ww.weave(_vectors(TAU1, TAU2), "task_arithmetic")
    torch.testing.assert_close(woven["v"], torch.tensor([4.0, -3.0, -1.0]) * (6.5 / 12))


def test_magmax_over_the_plain_set_picks_lambda_max_times_m():
    woven = ww.weave(
        _vectors(TAU1, TAU2), "task_arithmetic", lambdas=[0.3, 1.7, 0.9], pooling="magmax", collaborative=False
    )
    torch.testing.assert_close(woven["v"], torch.tensor([6.8, -5.1, -1.7]))


def test_magmax_over_the_collaborative_set_ties_go_to_the_later_candidate():
    # candidates τ1 = [1, 5], τ2 = [-3, 1], 0.5·M = [-1, 3], 1·M = [-2, 6]
    woven = ww.weave(_vectors([1.0, 5.0], [-3.0, 1.0]), "task_arithmetic", lambdas=[0.5, 1.0], pooling="magmax")
    assert woven["v"].tolist() == [-3.0, 6.0]
    # candidates 2, -2, 0·... : |2| ties between τ1 and τ2 -> the later, τ2
    woven = ww.weave(_vectors([2.0], [-2.0]), "task_arithmetic", lambdas=[1.0], pooling="magmax")
    assert woven["v"].tolist() == [-2.0]


def test_a_merger_can_pool_the_candidates():
    taus = _vectors(TAU1, TAU2)
    plain = ww.weave(taus, "task_arithmetic", lambdas=[0.5, 1.5], pooling="task_arithmetic", collaborative=False)
    torch.testing.assert_close(plain["v"], torch.tensor([8.0, -6.0, -2.0]))  # (Σλ)·M
    collab = ww.weave(taus, "task_arithmetic", lambdas=[0.5, 1.5], pooling="task_arithmetic")
    torch.testing.assert_close(collab["v"], torch.tensor([12.0, -9.0, -3.0]))  # Στ + (Σλ)·M
    # weight averaging as pooling is avg pooling by definition
    soup = ww.weave(taus, "task_arithmetic", lambdas=[0.5, 1.5], pooling="weight_averaging")
    torch.testing.assert_close(soup["v"], torch.tensor([3.0, -2.25, -0.75]))


@pytest.mark.parametrize("pooling", ["dare_ta", "dare_ties"])
def test_a_random_merger_as_pooling_draws_with_the_weaves_seed(pooling):
    """Two seeds pool differently, one seed reproduces itself, and the draws are those of the
    pooling merger run on the candidates with `pooling_seed` (not its default seed 0)."""
    generator = torch.Generator().manual_seed(0)
    taus = [
        {"w": torch.randn(40, 30, generator=generator), "b": torch.randn(30, generator=generator)} for _ in range(3)
    ]
    lambdas = [0.5, 1.0]
    first, again, second = (
        ww.weave(taus, "task_arithmetic", lambdas=lambdas, pooling=pooling, seed=seed) for seed in (1, 1, 2)
    )
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["w"], second["w"])
    merged = ww.merge("task_arithmetic", taus)
    candidates = [*taus, *({name: lam * value for name, value in merged.items()} for lam in lambdas)]
    for seed, woven in ((1, first), (2, second)):
        expected = ww.merge(pooling, candidates, seed=ww.weaving.pooling_seed(seed))
        for name in expected:
            torch.testing.assert_close(woven[name], expected[name], rtol=1e-6, atol=1e-7)
    assert ww.weaving.pooling_seed(1) != 1 and ww.weaving.pooling_seed(1) != ww.weaving.pooling_seed(2)


def _constant_tasks(size):
    return {
        "a": {"x": torch.full((size,), 1.0), "y": torch.full((3, size), 1.0)},
        "b": {"x": torch.full((size,), 3.0), "y": torch.full((3, size), 3.0)},
    }


def test_randmix_picks_each_candidate_uniformly_so_its_mean_is_the_avg():
    # candidates 1, 3, 0.5·4 = 2, 1·4 = 4 everywhere: each 1/4 of 100 000 elements, mean 2.5
    woven = ww.weave(_constant_tasks(25_000), "task_arithmetic", lambdas=[0.5, 1.0], pooling="randmix", seed=11)
    values = torch.cat([woven["x"], woven["y"].reshape(-1)])
    for candidate in (1.0, 3.0, 2.0, 4.0):
        assert abs(float((values == candidate).double().mean()) - 0.25) < 0.01
    assert abs(float(values.double().mean()) - 2.5) < 0.02
    plain = ww.weave(
        _constant_tasks(25_000), "task_arithmetic", lambdas=[0.5, 1.0], pooling="randmix", collaborative=False
    )
    plain_values = torch.cat([plain["x"], plain["y"].reshape(-1)])
    assert set(plain_values.unique().tolist()) == {2.0, 4.0}
    assert abs(float((plain_values == 4.0).double().mean()) - 0.5) < 0.01


def test_randmix_averaged_over_seeds_approaches_avg_per_element():
    taus = _vectors(TAU1, TAU2)
    lambdas = [0.2, 1.0, 1.4]
    seeds = 400
    mean = sum(ww.weave(taus, "task_arithmetic", lambdas=lambdas, pooling="randmix", seed=s)["v"] for s in range(seeds))
    mean = mean / seeds
    expected = ww.weave(taus, "task_arithmetic", lambdas=lambdas, pooling="avg")["v"]
    # per element the five candidates are τ1, τ2, 0.2M, M, 1.4M; their spread bounds the error
    candidates = torch.tensor([TAU1, TAU2]).T
    merged = candidates.sum(1, keepdim=True)
    everything = torch.cat([candidates, merged * torch.tensor(lambdas)], dim=1)
    tolerance = 5 * everything.std(dim=1, unbiased=False) / math.sqrt(seeds)
    assert ((mean - expected).abs() <= tolerance).all()


def test_randmix_values_are_candidates_and_depend_on_the_seed():
    taus = _vectors([1.0] * 200, [2.0] * 200)
    first = ww.weave(taus, "task_arithmetic", lambdas=[2.0, 4.0], pooling="randmix", seed=1)["v"]
    assert set(first.tolist()) <= {1.0, 2.0, 6.0, 12.0}
    again = ww.weave(taus, "task_arithmetic", lambdas=[2.0, 4.0], pooling="randmix", seed=1)["v"]
    other = ww.weave(taus, "task_arithmetic", lambdas=[2.0, 4.0], pooling="randmix", seed=2)["v"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_randmix_does_not_depend_on_chunk_size():
    generator = torch.Generator().manual_seed(0)
    tasks = torch.randn(3, 50, generator=generator)
    candidates = Candidates(tasks, tasks.sum(0), (0.5, 1.0), (("a", (5, 4)), ("b", (30,))))
    whole = randmix(candidates, seed=5)
    for chunk_size in (1, 7, 64):
        assert torch.equal(randmix(candidates, seed=5, chunk_size=chunk_size), whole)


def test_randmix_does_not_depend_on_tensor_order():
    generator = torch.Generator().manual_seed(1)
    rows = [{"a": torch.randn(4, 5, generator=generator), "b": torch.randn(30, generator=generator)} for _ in range(3)]
    reordered = [{"b": row["b"], "a": row["a"]} for row in rows]
    first = ww.weave(rows, "ties", lambdas=[0.3, 0.9], pooling="randmix", seed=9)
    second = ww.weave(reordered, "ties", lambdas=[0.3, 0.9], pooling="randmix", seed=9)
    assert torch.equal(first["a"], second["a"]) and torch.equal(first["b"], second["b"])


@pytest.mark.parametrize("pooling", ["avg", "randmix", "magmax", "ties"])
@pytest.mark.parametrize("collaborative", [True, False])
def test_weave_keeps_bf16_and_leaves_inputs_untouched(pooling, collaborative):
    taus = [
        {"v": torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16)},
        {"v": torch.tensor([3.0, -1.0, -1.5], dtype=torch.bfloat16)},
    ]
    before = [tau["v"].clone() for tau in taus]
    woven = ww.weave(taus, "magmax", lambdas=[0.5, 1.0], pooling=pooling, collaborative=collaborative)
    assert woven["v"].dtype == torch.bfloat16 and woven["v"].shape == (3,)
    woven["v"].fill_(7.0)
    assert all(torch.equal(tau["v"], old) for tau, old in zip(taus, before))


def test_weave_accepts_a_bank_and_a_named_dict():
    taus = _vectors(TAU1, TAU2)
    by_name = ww.weave({"x": taus[0], "y": taus[1]}, "task_arithmetic", lambdas=[0.5, 1.5])
    by_bank = ww.weave(ww.TaskVectorBank.from_state_dicts(taus), "task_arithmetic", lambdas=[0.5, 1.5])
    torch.testing.assert_close(by_name["v"], torch.tensor([3.0, -2.25, -0.75]))
    torch.testing.assert_close(by_bank["v"], torch.tensor([3.0, -2.25, -0.75]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"merger": "tie"}, "did you mean 'ties'"),
        ({"pooling": "avgg"}, "did you mean 'avg'"),
        ({"lambdas": []}, "must not be empty"),
        ({"lambdas": [0.5, math.nan]}, "finite"),
        ({"lambdas": [0.5, math.inf]}, "finite"),
        ({"lambdas": "0.5"}, "list of numbers"),
        ({"lambdas": [True]}, "finite number"),
        ({"merger_params": {"kk": 0.1}}, "no hyper-parameter 'kk'"),
        ({"merger_params": {"k": 2.0}}, r"k must lie in \(0.0, 1.0\]"),
        ({"collaborative": "yes"}, "collaborative"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_weave_validates_its_arguments(kwargs, message):
    arguments = {"merger": "ties", **kwargs}
    with pytest.raises(ValueError, match=message):
        ww.weave(_vectors(TAU1, TAU2), **arguments)


def test_randmix_draws_each_tensor_from_its_own_stream():
    # Same-shaped tensors with the same four candidates: independent picks agree 1/4 of the time.
    taus = [{"x": torch.full((4000,), value), "y": torch.full((4000,), value)} for value in (1.0, 3.0)]
    woven = ww.weave(taus, "task_arithmetic", lambdas=[0.5, 1.0], pooling="randmix", seed=4)
    agreement = float((woven["x"] == woven["y"]).double().mean())
    assert 0.2 < agreement < 0.3


# docs/METHODS.md §1 identities for weaving around every merger, and every merger as the pooling function

NAMES = sorted(ww.MERGERS)
LAMBDAS = [0.2, 0.5, 1.3]


def _taus(tasks=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    layout = {"w": (6, 4), "b": (4,), "s": ()}
    common = {name: torch.randn(shape, generator=generator, dtype=torch.float64) for name, shape in layout.items()}
    return [
        {
            name: 0.5 * common[name] + torch.randn(shape, generator=generator, dtype=torch.float64)
            for name, shape in layout.items()
        }
        for _ in range(tasks)
    ]


def _close(actual, expected):
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_plain_avg_equals_the_merger_at_the_mean_lambda(name):
    taus = _taus()
    merged = ww.merge(name, taus)
    woven = ww.weave(taus, name, lambdas=LAMBDAS, pooling="avg", collaborative=False)
    _close(woven, {key: value * (sum(LAMBDAS) / len(LAMBDAS)) for key, value in merged.items()})


@pytest.mark.parametrize("name", NAMES)
def test_collaborative_avg_identity_holds_for_every_merger(name):
    taus = _taus()
    merged = ww.merge(name, taus)
    woven = ww.weave(taus, name, lambdas=LAMBDAS, pooling="avg")
    expected = {
        key: (sum(tau[key] for tau in taus) + math.fsum(LAMBDAS) * merged[key]) / (len(taus) + len(LAMBDAS))
        for key in merged
    }
    _close(woven, expected)


@pytest.mark.parametrize("name", NAMES)
def test_magmax_over_the_plain_set_picks_lambda_max_times_m_for_every_merger(name):
    taus = _taus()
    merged = ww.merge(name, taus)
    woven = ww.weave(taus, name, lambdas=[0.3, 1.7, -1.7, 0.9], pooling="magmax", collaborative=False)
    # |1.7| = |-1.7|: the later candidate, -1.7·M, wins the tie
    _close(woven, {key: value * -1.7 for key, value in merged.items()})


@pytest.mark.parametrize("name", NAMES)
def test_randmix_pools_actual_candidates(name):
    taus = _taus()
    merged = ww.merge(name, taus)
    woven = ww.weave(taus, name, lambdas=LAMBDAS, pooling="randmix", seed=4)
    for key in merged:
        candidates = torch.stack([tau[key] for tau in taus] + [lam * merged[key] for lam in LAMBDAS])
        assert bool((candidates == woven[key]).any(dim=0).all()), key


def test_randmix_pooling_has_the_expectation_of_avg_per_element():
    taus = _taus(tasks=2)
    seeds = 300
    mean = sum(ww.weave(taus, "ties", lambdas=LAMBDAS, pooling="randmix", seed=s)["w"] for s in range(seeds)) / seeds
    expected = ww.weave(taus, "ties", lambdas=LAMBDAS, pooling="avg")["w"]
    merged = ww.merge("ties", taus)["w"]
    candidates = torch.stack([tau["w"] for tau in taus] + [lam * merged for lam in LAMBDAS])
    tolerance = 5 * candidates.std(dim=0, unbiased=False) / math.sqrt(seeds) + 1e-12
    assert bool(((mean - expected).abs() <= tolerance).all())


@pytest.mark.parametrize("pooling", [name for name in NAMES if name != "randmix"])  # "randmix" names the pooling
@pytest.mark.parametrize("collaborative", [True, False])
def test_every_merger_pools_the_candidates_as_if_they_were_task_vectors(pooling, collaborative):
    taus = _taus(tasks=3)
    if pooling == "consensus" and not collaborative:
        lambdas = [0.5, 1.0, 1.5]
    else:
        lambdas = LAMBDAS
    merged = ww.merge("ties", taus)
    candidates = ([*taus] if collaborative else []) + [
        {key: lam * value for key, value in merged.items()} for lam in lambdas
    ]
    # a random pooling merger (DARE) draws with the weave's seed (0 here), derived
    seeded = {"seed": ww.weaving.pooling_seed(0)} if "seed" in ww.MERGERS[pooling].defaults else {}
    expected = ww.merge(pooling, candidates, **seeded)
    woven = ww.weave(taus, "ties", lambdas=lambdas, pooling=pooling, collaborative=collaborative)
    _close(woven, expected)


def test_a_merger_pooling_that_needs_more_candidates_says_so():
    with pytest.raises(ValueError, match="consensus needs at least 2 task vectors"):
        ww.weave(_taus(), "ties", lambdas=[1.0], pooling="consensus", collaborative=False)


def test_fused_weaving_reads_the_bank_in_a_single_final_pass():
    # Weaving pools inside the merger's final pass: the pooled vector, never K scaled copies.
    bank = ww.TaskVectorBank.from_state_dicts(_taus())
    reads = []
    stream = bank.stream()
    counting = dataclasses.replace(stream, loader=lambda block: reads.append(block.size) or stream.loader(block))
    record = ww.MERGERS["task_arithmetic"]
    record.run(counting)
    merge_reads = sum(reads)
    reads.clear()
    from ww.pooling import POOLINGS
    from ww.weaving import _fused

    pooled = _fused(record, None, counting, POOLINGS["avg"], tuple(LAMBDAS), True, 0)
    assert sum(reads) == 2 * merge_reads  # the merger's read plus the pooling's look at the same block
    assert pooled.shape == (bank.num_params,)
