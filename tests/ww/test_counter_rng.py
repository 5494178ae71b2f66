"""ww.engine.counter_rng: a lowbias32 counter stream in int32 torch ops, position-derived and chunk-invariant."""

import pytest
import torch

from ww.engine.counter_rng import hash32, random_words, stream_key, uniform_indices, uniform_lanes16

MASK = (1 << 32) - 1


def _lowbias32_reference(value):
    """Wellons' lowbias32 on Python ints (unbounded, masked to 32 bits)."""
    x = value & MASK
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def test_hash32_matches_the_unsigned_reference_including_sign_bit_words():
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(-(2**31), 2**31 - 1, (2000,), dtype=torch.int32, generator=generator)
    words = torch.cat([words, torch.tensor([0, -1, -(2**31), 2**31 - 1], dtype=torch.int32)])
    got = [value & MASK for value in hash32(words).tolist()]
    assert got == [_lowbias32_reference(value) for value in words.tolist()]
    assert _lowbias32_reference(0) == 0 and _lowbias32_reference(1) != 1


def test_stream_words_are_the_keyed_hash_of_the_position():
    key = stream_key(3, "x")
    words = random_words(key, torch.arange(100))
    expected = [_lowbias32_reference(i ^ (key & MASK)) ^ (key >> 32) for i in range(100)]
    assert [word & MASK for word in words.tolist()] == expected
    assert len(set(expected)) == 100  # a bijection of the counter: no repeats within a stream


def test_lanes_are_the_halves_of_the_words_and_do_not_depend_on_the_count():
    positions = torch.arange(50)
    five = uniform_lanes16(1, "dare", "w", positions, 5)
    two = uniform_lanes16(1, "dare", "w", positions, 2)
    assert five.dtype == torch.int16 and five.shape == (5, 50)
    assert torch.equal(five[:2], two)
    word = random_words(stream_key(1, "dare", "w", "0"), positions)
    assert [(v & 0xFFFF) for v in five[0].tolist()] == [(w & 0xFFFF) for w in word.tolist()]
    assert [(v & 0xFFFF) for v in five[1].tolist()] == [((w & MASK) >> 16) for w in word.tolist()]
    as_float = uniform_lanes16(1, "dare", "w", positions, 5, out=torch.empty(5, 50))
    assert torch.equal(as_float, five.float())


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
