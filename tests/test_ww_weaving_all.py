"""METHODS §1 identities for weaving around every merger, and every merger as the pooling function."""

import dataclasses
import math

import pytest
import torch

import ww

torch.set_num_threads(2)
NAMES = sorted(ww.MERGERS)
LAMBDAS = [0.2, 0.5, 1.3]


def _taus(tasks=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    layout = {"w": (6, 4), "b": (4,), "s": ()}
    common = {name: torch.randn(shape, generator=generator, dtype=torch.float64) for name, shape in layout.items()}
    return [{name: 0.5 * common[name] + torch.randn(shape, generator=generator, dtype=torch.float64)
             for name, shape in layout.items()} for _ in range(tasks)]


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
def test_collaborative_avg_is_task_sum_plus_lambda_sum_times_m_over_t_plus_k(name):
    taus = _taus()
    merged = ww.merge(name, taus)
    woven = ww.weave(taus, name, lambdas=LAMBDAS, pooling="avg")
    expected = {key: (sum(tau[key] for tau in taus) + math.fsum(LAMBDAS) * merged[key]) / (len(taus) + len(LAMBDAS))
                for key in merged}
    _close(woven, expected)


@pytest.mark.parametrize("name", NAMES)
def test_magmax_over_the_plain_set_picks_lambda_max_times_m(name):
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
    candidates = ([*taus] if collaborative else []) + [{key: lam * value for key, value in merged.items()} for lam in lambdas]
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
