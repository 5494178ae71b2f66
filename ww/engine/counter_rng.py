"""A counter-based random stream in plain torch int32 arithmetic.

Randmix (docs/METHODS.md §1) must give the same result whatever the chunking, device or tensor order, and
DARE's drop masks must not depend on how a bank is cut into blocks, so a random draw is a pure
function of (seed, labels, element position) instead of the state of a sequential generator.

Word i of the stream with 64-bit key k = (k_hi, k_lo) is ``hash32(i XOR k_lo) XOR k_hi``, where
``hash32`` is Chris Wellons' "lowbias32" integer hash (found by his hash prospector, 2018; bias
0.17, i.e. close to a random permutation's avalanche): three xor-shifts and two multiplications,
``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16`` on 32-bit words.
A bijection of the counter, it never repeats a word within a stream (tensors have < 2^31 entries).
It replaced SplitMix64 here because torch's int64 multiplications are slow on CPU: the same draws
cost several times less in int32, and randmix and DARE spend most of their time drawing.

Keys come from hashlib, so they do not depend on Python's salted hash(). torch has no unsigned
integers with arithmetic: words live in int32, where + and * wrap modulo 2^32 like unsigned
arithmetic does, and logical right shifts are emulated by masking the arithmetic shift.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

_MASK32 = (1 << 32) - 1
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B - (1 << 32))  # the second as the int32 with the same bits
_SHIFTS = (16, 15, 16)


def _signed32(value: int) -> int:
    """The int32 with the same 32 bits as the unsigned ``value``."""
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def hash32(words: torch.Tensor) -> torch.Tensor:
    """lowbias32 of every int32 word (a new int32 tensor; in place on a copy, one scratch tensor)."""
    z = words.to(torch.int32, copy=True)
    scratch = torch.empty_like(z)
    for round_index, shift in enumerate(_SHIFTS):
        torch.bitwise_right_shift(z, shift, out=scratch)
        scratch.bitwise_and_((1 << (32 - shift)) - 1)
        z.bitwise_xor_(scratch)
        if round_index < len(_MULTIPLIERS):
            z.mul_(_MULTIPLIERS[round_index])
    return z


def hash32_wide(words: torch.Tensor) -> torch.Tensor:
    """`hash32` on 32-bit words held in int64 (values in [0, 2^32)), returned the same way.

    The form for compiled kernels (`ww.kernels`): masks after each multiplication instead of
    relying on int32 wrap-around, so the C++ inductor writes has no signed overflow to trip on.
    """
    z = words & _MASK32
    for round_index, shift in enumerate(_SHIFTS):
        z = z ^ (z >> shift)
        if round_index < len(_MULTIPLIERS):
            z = (z * (_MULTIPLIERS[round_index] & _MASK32)) & _MASK32
    return z


def key_words(key: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The 64-bit stream ``key`` as an int64 tensor ``[low 32 bits, high 32 bits]`` (for kernels)."""
    return torch.tensor([key & _MASK32, key >> 32], dtype=torch.int64, device=device)


def uniform_indices_wide(positions: torch.Tensor, key: torch.Tensor, n: int) -> torch.Tensor:
    """`uniform_indices` for n <= 128 in int64 arithmetic (compiled kernels): the same draws.

    ``key`` is `key_words` of the stream key; ``positions`` int64, each in [0, 2^31).
    """
    words = hash32_wide(positions ^ key[0]) ^ key[1]
    return (((words >> 8) & 0xFFFFFF) * n) >> 24


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
    """The 32-bit words (int32) at ``positions`` (>= 0, < 2^31) of the stream keyed by ``key``."""
    low, high = _signed32(key), _signed32(key >> 32)
    return hash32(positions.to(torch.int32).bitwise_xor_(low)).bitwise_xor_(high)


def uniform_indices(key: int, positions: torch.Tensor, n: int) -> torch.Tensor:
    """For each position an index uniform in [0, n) (int64), drawn from the stream keyed by ``key``.

    Multiply-shift: floor(u·n / 2^b) with u the top b bits of the word. For n <= 128 (weaving pools
    a few dozen candidates) b = 24 and everything stays in fast int32 arithmetic, with a bias below
    n / 2^24 (< 8e-6); larger n use all b = 32 bits in int64 (bias below n / 2^32).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 1 << 31:
        raise ValueError(f"n must be an int in [1, 2**31), got {n!r}")
    words = random_words(key, positions)
    if n <= 128:
        top = words.bitwise_right_shift_(8).bitwise_and_((1 << 24) - 1)
        return top.mul_(n).bitwise_right_shift_(24).long()
    unsigned = words.to(torch.int64).bitwise_and_(_MASK32)
    return unsigned.mul_(n).bitwise_right_shift_(32)


def uniform_lanes16(
    seed: int, label: str, name: str, positions: torch.Tensor, count: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``count`` independent 16-bit draws per position, as a ``[count, n]`` tensor.

    Draw j at position i is 16-bit half j % 2 (little-endian: the low half first) of word i of the
    stream keyed by (seed, label, name, j // 2), read as a signed int16: two draws per word, and
    draw j does not depend on ``count``. Each draw is uniform over -32768..32767. Without ``out``
    the result is a contiguous int16 tensor; with ``out`` (any dtype, ``[count, n]``) the draws are
    converted into it row by row, so callers get a contiguous float mask without another pass.
    """
    keys = [stream_key(seed, label, name, str(group)) for group in range((count + 1) // 2)]
    return lanes16(keys, positions, count, out)


def lanes16(keys: Sequence[int], positions: torch.Tensor, count: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """`uniform_lanes16` with the stream keys of the task pairs given (``keys[j // 2]`` for draw j)."""
    result = (
        out if out is not None else torch.empty((count, positions.numel()), dtype=torch.int16, device=positions.device)
    )
    for group in range((count + 1) // 2):
        halves = random_words(keys[group], positions).view(torch.int16).view(-1, 2)
        for half in range(min(2, count - 2 * group)):
            result[2 * group + half].copy_(halves[:, half])
    return result
