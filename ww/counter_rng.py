"""A counter-based random stream in plain torch int64 arithmetic.

Randmix (METHODS §1) must give the same result whatever the chunking, device or tensor order, so a
random draw is a pure function of (seed, labels, element position) instead of the state of a
sequential generator. The stream is SplitMix64 (Steele, Lea, Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014): word i of a stream with key k is
mix64(k + (i + 1)·γ), γ = 0x9E3779B97F4A7C15, which is exactly the i-th output of a SplitMix64
generator seeded with k. Keys come from hashlib, so they do not depend on Python's salted hash().

torch has no uint64 arithmetic: words live in int64, where + and * wrap modulo 2**64 like unsigned
arithmetic does, and logical right shifts are emulated by masking the arithmetic shift.
"""

from __future__ import annotations

import hashlib

import torch

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift_right_logical(words: torch.Tensor, bits: int) -> torch.Tensor:
    """``words >>> bits`` for 64-bit words stored in int64 (the arithmetic shift smears the sign bit)."""
    return (words >> bits) & ((1 << (64 - bits)) - 1)


def mix64(words: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, a bijection of 64-bit words (int64 tensor in, new int64 tensor out)."""
    z = words ^ _shift_right_logical(words, 30)
    z = z * _MIX1
    z = z ^ _shift_right_logical(z, 27)
    z = z * _MIX2
    return z ^ _shift_right_logical(z, 31)


def stream_key(seed: int, *labels: str) -> int:
    """A 64-bit stream key for ``seed`` and ``labels`` (e.g. the purpose and the tensor name).

    Distinct labels give independent-looking streams, so two uses of the same seed (randmix pooling,
    a later DARE drop mask) do not reuse the same random words.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    text = "\x00".join([str(seed), *labels]).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def random_words(key: int, positions: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 words at ``positions`` (int64, >= 0) of the stream keyed by ``key``."""
    counters = (positions.to(torch.int64) + 1) * _GAMMA + _signed(key)
    return mix64(counters)


def uniform_indices(key: int, positions: torch.Tensor, n: int) -> torch.Tensor:
    """For each position an index uniform in [0, n), drawn from the stream keyed by ``key``.

    Multiply-shift on the top 32 bits of the word (floor(u·n / 2**32)); its bias is below n / 2**32,
    about 2e-8 for the few dozen candidates weaving pools.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 1 << 31:
        raise ValueError(f"n must be an int in [1, 2**31), got {n!r}")
    high = _shift_right_logical(random_words(key, positions), 32)
    return (high * n) >> 32
