"""ww.counter_rng: SplitMix64 in int64 torch ops, position-derived and chunk-invariant."""

import pytest
import torch

from ww.counter_rng import mix64, random_words, stream_key, uniform_indices

MASK = (1 << 64) - 1


def _mix64_reference(value):
    """SplitMix64's finaliser on Python ints (unbounded, masked to 64 bits)."""
    z = value & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_stream_reproduces_published_splitmix64_outputs():
    # First outputs of SplitMix64 seeded with 1234567 (Rosetta Code "Pseudo-random numbers/Splitmix64").
    words = random_words(1234567, torch.arange(5))
    assert [word & MASK for word in words.tolist()] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]


def test_mix64_matches_unsigned_reference_including_sign_bit_words():
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(-(2**63), 2**63 - 1, (500,), dtype=torch.int64, generator=generator)
    words = torch.cat([words, torch.tensor([0, -1, -(2**63), 2**63 - 1])])
    got = [value & MASK for value in mix64(words).tolist()]
    assert got == [_mix64_reference(value) for value in words.tolist()]


def test_chunks_give_the_same_indices_as_one_pass():
    key = stream_key(7, "randmix", "visual.proj")
    whole = uniform_indices(key, torch.arange(10_000), 13)
    parts = [uniform_indices(key, torch.arange(start, min(start + 997, 10_000)), 13) for start in range(0, 10_000, 997)]
    assert torch.equal(torch.cat(parts), whole)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_indices_are_uniform_over_ten_bins(seed):
    draws = uniform_indices(stream_key(seed, "test"), torch.arange(100_000), 10)
    assert int(draws.min()) == 0 and int(draws.max()) == 9
    counts = torch.bincount(draws, minlength=10).double()
    chi_square = float(((counts - 10_000) ** 2 / 10_000).sum())
    assert chi_square < 27.88  # 99.9 % quantile of chi-square with 9 degrees of freedom


def test_consecutive_draws_look_independent():
    draws = uniform_indices(stream_key(3, "pairs"), torch.arange(100_000), 10)
    pairs = draws[0::2] * 10 + draws[1::2]  # 50 000 disjoint pairs over 100 cells
    counts = torch.bincount(pairs, minlength=100).double()
    chi_square = float(((counts - 500) ** 2 / 500).sum())
    assert chi_square < 148.23  # 99.9 % quantile of chi-square with 99 degrees of freedom


def test_different_labels_and_seeds_give_unrelated_streams():
    positions = torch.arange(100_000)
    base = uniform_indices(stream_key(0, "randmix", "a"), positions, 10)
    for key in (stream_key(0, "randmix", "b"), stream_key(1, "randmix", "a")):
        agreement = float((uniform_indices(key, positions, 10) == base).double().mean())
        assert 0.09 < agreement < 0.11  # independent streams agree 1/10 of the time
    assert stream_key(0, "x") == stream_key(0, "x")


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="seed"):
        stream_key(1.5, "x")
    with pytest.raises(ValueError, match="n must"):
        uniform_indices(0, torch.arange(3), 0)
