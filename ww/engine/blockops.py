"""Element-wise building blocks shared by the mergers, written for speed on CPU.

On CPU, torch kernels that produce or consume bool tensors (comparisons, ``torch.where``,
``masked_fill``) run many times slower than float arithmetic, and so does ``tanh`` against a sum;
mergers are memory-bound only if their inner loops avoid them. So masks here are 0/1 float tensors
built from ``sign`` and ``clamp``, selections are multiplications by such masks, and the results
are exact: ``sign(a - b)`` has the sign of the exact difference (IEEE subtraction never rounds a
non-zero difference to zero, denormals being kept), products by 0 or 1 are exact, and adding
±0 leaves a value unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .compiling import kernel


def above(values: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """1.0 where ``values > threshold``, else 0.0 (a new float tensor; exact, see module doc)."""
    return (values - threshold).clamp_(min=0).sign_()


def at_least(values: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """1.0 where ``values >= threshold``, else 0.0 (exact).

    A small (broadcast) threshold is moved to the float just below it, since no float lies
    strictly between the two, and `above` it is taken: three passes over ``values``. A threshold as
    large as ``values`` is cheaper as 1 − above(threshold, values).
    """
    if isinstance(threshold, torch.Tensor):
        if threshold.numel() * 4 > values.numel():
            return above(threshold, values).neg_().add_(1)
        below = torch.nextafter(threshold, torch.full_like(threshold, -math.inf))
    else:
        # the float below in the values' own precision: a double's neighbour rounds back to the
        # threshold in fp32 (2.0 - 2^-52 is 2.0f), which made `at_least(x, 2)` false for x = 2
        scalar = torch.tensor(float(threshold), dtype=values.dtype, device=values.device)
        below = torch.nextafter(scalar, torch.tensor(-math.inf, dtype=values.dtype, device=values.device))
    return above(values, below)


def choose(mask: torch.Tensor, if_one: torch.Tensor, if_zero: torch.Tensor) -> torch.Tensor:
    """``if_one`` where the 0/1 ``mask`` is 1, ``if_zero`` where it is 0, exactly (no rounding)."""
    return if_one * mask + if_zero * (1 - mask)


def last_argmax(values: torch.Tensor) -> torch.Tensor:
    """Per column of ``values`` ``[N, n]``, the index of the LAST row holding the column's maximum.

    Rows reaching the maximum are marked 1..N by their position and the largest mark wins: two fast
    reductions (``amax``) instead of ``argmax`` over dim 0, which is much slower on CPU.
    """
    best = values.amax(dim=0)
    positions = torch.arange(1, values.shape[0] + 1, dtype=values.dtype, device=values.device).unsqueeze(1)
    marks = at_least(values, best).mul_(positions)
    return marks.amax(dim=0).long().sub_(1)


def pick_rows(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``values[rows[i], i]`` for every column i (``values`` ``[N, n]``, ``rows`` int64 ``[n]``)."""
    return values.gather(0, rows.unsqueeze(0)).squeeze(0)


def select_by_index(options: Sequence[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """``options[index[i]]`` at every position i (options broadcast against ``index``), for compiled kernels.

    A binary tree of ``torch.where`` on the bits of ``index``: N - 1 selects and log2 N bit tests per
    entry, all vectorised, where inductor turns a gather or a table lookup into a scalar loop (a
    chain of N comparisons is no faster than the gather). Indices outside [0, N) select some
    option: callers mask them. With one option, that option as it is.
    """
    if not options:
        raise ValueError("select_by_index needs at least one option")
    return _tree(list(options), index, 0, len(options))


def _tree(options: list[torch.Tensor], index: torch.Tensor, low: int, high: int) -> torch.Tensor:
    if high - low == 1:
        return options[low]
    half = 1 << ((high - low - 1).bit_length() - 1)  # the largest power of two below the count
    bit = ((index >> (half.bit_length() - 1)) & 1) == 1
    return torch.where(bit, _tree(options, index, low + half, high), _tree(options, index, low, low + half))


def _largest_magnitude_fused(values: torch.Tensor) -> torch.Tensor:
    """`largest_magnitude` for the compiler: the winner kept by a mask, one fused loop."""
    magnitude = values.abs()
    rows = torch.arange(values.shape[0], device=values.device).unsqueeze(1)
    last = torch.where(magnitude >= magnitude.amax(dim=0), rows, -1).amax(dim=0)
    return torch.where(rows == last, values, 0.0).sum(dim=0)  # one non-zero term: exact


@kernel(_largest_magnitude_fused)
def largest_magnitude(values: torch.Tensor) -> torch.Tensor:
    """Per column the entry of largest |·|, ties to the later row (MagMax's rule, docs/METHODS.md §1/§2)."""
    return pick_rows(values, last_argmax(values.abs()))


def sparse_nonzero(mask: torch.Tensor, groups: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the non-zero entries of a sparse 0/1 ``[T, n]`` mask (unordered).

    ``nonzero`` costs many times a float operation per entry it scans on CPU, however few entries
    are set.
    Here the columns are split into ``groups`` interleaved sets (column c belongs to set c // m,
    m = n / groups); the maximum over the sets is an outer reduction (vectorised), ``nonzero``
    scans only that ``[T, m]`` summary, and the few hits are expanded back to their ``groups``
    candidate columns. For masks as sparse as a selection bracket's this scans far less.
    """
    rows, columns = mask.shape
    width = columns // groups
    found_rows, found_columns = [], []
    if width:
        body = mask[:, : width * groups].reshape(rows, groups, width)
        hits = body.amax(dim=1).nonzero()  # [h, 2]: (row, column within a set)
        candidates = body[hits[:, 0], :, hits[:, 1]]  # [h, groups]
        inner = candidates.nonzero()
        found_rows.append(hits[inner[:, 0], 0])
        found_columns.append(inner[:, 1] * width + hits[inner[:, 0], 1])
    if width * groups < columns:
        tail = mask[:, width * groups :].nonzero()
        found_rows.append(tail[:, 0])
        found_columns.append(tail[:, 1] + width * groups)
    return torch.cat(found_rows), torch.cat(found_columns)
