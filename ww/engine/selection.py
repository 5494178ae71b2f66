"""Exact order statistics of streamed values, by selection rather than sorting (docs/DESIGN.md).

TIES keeps each task's top k·P entries by magnitude over the WHOLE flattened encoder, PCB clamps to
global quantiles and keeps a global top fraction (docs/METHODS.md §2): each needs the r-th largest of P
values per task, with P up to 3·10^8 and the values possibly on disk. A full sort costs
O(P log P) time and a P-sized copy; ``torch.kthvalue`` needs the P values in memory at once.

The fast path is Floyd and Rivest's sampling selection ("Expected time bounds for selection",
CACM 1975): a sample of about 260 000 entries per task, read as thousands of short windows spread
over the whole vector, gives a bracket [lo, hi] that holds the r-th largest with a wide safety
margin (six standard deviations, inflated by the correlation measured inside windows); one
streaming pass counts the entries above hi and collects the few inside the
bracket, and ``kthvalue`` among those gives the exact answer: one read of the vector instead of a
sort of it. When a bracket misses (the counts say so, exactly),
the radix selection below answers instead, so the result is always exact.

With compiled kernels (`ww.kernels`) the counting pass is one fused loop per block
(`_bracket_summary`): it counts, and per cell of 16 interleaved columns records how many entries
fall in the bracket and the largest and smallest of them, which is every bracketed value for all
but the rare cells holding three or more (those are gathered again). The eager pass instead
builds the bracket mask and scans it (`sparse_nonzero`). Both collect the same values.

Radix selection needs no sample. A float's bit pattern, read as an integer and with negative numbers'
magnitude bits flipped, orders exactly like the float. Pass 1 streams the blocks and counts the top
16 bits of every key per task (a 65 536-bin histogram); the cumulative count from the top names the
bucket holding the r-th largest and the rank left inside it. Pass 2 collects the values of that
bucket, typically a few tenths of a percent of P for smooth data, and selects among them with
``kthvalue``; a bucket too large to collect (e.g. many equal values) is refined by counting its
next 16 bits instead, which for fp32 pins the value exactly. Memory stays O(T · 65 536) plus the
collected bucket, and the result equals ``torch.kthvalue`` on the whole row.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .blockops import above, at_least, sparse_nonzero
from .compiling import Kernel
from .streaming import Block, TaskStream, in_workers, sample_blocks

DIGIT_BITS = 16
_BINS = 1 << DIGIT_BITS
HISTOGRAM_BLOCK_ENTRIES = 1 << 21
"""Entries per block (all tasks) in the histogram pass, so the 65 536 bins stay a small overhead."""
DIRECT_LIMIT = 1 << 16
"""Up to this many entries per task, values are gathered whole and selected with ``kthvalue``."""
COLLECT_LIMIT = 1 << 23
"""Largest bucket (entries per task and rank) collected for the final ``kthvalue``; larger ones are refined."""

Values = Callable[[torch.Tensor, Block], torch.Tensor]


def magnitudes(tau: torch.Tensor, block: Block) -> torch.Tensor:
    """|τ|: the values TIES and PCB select among (recognised by the fused bracket pass, which takes
    the magnitude inside its loop instead of writing it out first)."""
    return tau.abs()


BRACKET_GROUPS = 16
"""Columns folded into one cell of the fused bracket pass's summary (see `_bracket_summary`)."""


def _bracket_summary(body: torch.Tensor, high: torch.Tensor, low: torch.Tensor, absolute: bool):
    """For a ``[T, BRACKET_GROUPS, w]`` view of a block: per row #entries > high and #entries >= low;
    per ``[T, w]`` cell the number of its entries inside [low, high] and their largest and smallest.

    Cell j of row t holds columns j, j + w, j + 2w, ...; with brackets holding a small fraction of the
    entries almost every cell holds 0, 1 or 2 of them, which its count, maximum and minimum give exactly,
    so `_collect_flagged` reads two small ``[T, w]`` arrays instead of gathering the block again.
    Every reduction runs over the group axis, so inductor fuses them into one vectorised loop
    that writes no mask. The caller cuts the view: an index ``c // w`` inside the compiled loop
    would cost an integer division per load.
    """
    values = body.abs() if absolute else body
    high, low = high.unsqueeze(2), low.unsqueeze(2)
    over = torch.where(values > high, 1.0, 0.0).sum(dim=1)
    inside = (values >= low) & (values <= high)
    # float counts are exact (a block row has far fewer than 2^24 entries); converting them here
    # would split the loop in two
    count = torch.where(inside, 1.0, 0.0).sum(dim=1)
    largest = torch.where(inside, values, -math.inf).amax(dim=1)
    smallest = torch.where(inside, values, math.inf).amin(dim=1)
    over = over.sum(dim=1)
    # the largest |value| (NaN if any is NaN) is non-finite iff the block holds NaN/Inf: validation
    # for free when taken per cell along the loop's own axis (a whole-block sum would be a second loop)
    total = values.abs().amax(dim=1).amax() if values.shape[2] else values.new_zeros(())
    return over, over + count.sum(dim=1), count, largest, smallest, total  # #(>= low) = #(> high) + #inside


bracket_summary = Kernel(_bracket_summary, name="bracket_summary")


def _bracket_summary_pair(body, high, low, other_high, other_low, absolute: bool):
    """`_bracket_summary` for two brackets in one loop (PCB's two quantiles): one read of the block."""
    return (*_bracket_summary(body, high, low, absolute), *_bracket_summary(body, other_high, other_low, absolute)[:5])


bracket_summary_pair = Kernel(_bracket_summary_pair, name="bracket_summary_pair")


def _grouped(vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[T, BRACKET_GROUPS, w]`` view of a block's first ``BRACKET_GROUPS·w`` columns, and the rest."""
    rows, columns = vals.shape
    width = columns // BRACKET_GROUPS
    return vals[:, : width * BRACKET_GROUPS].reshape(rows, BRACKET_GROUPS, width), vals[:, width * BRACKET_GROUPS :]


def _collect_flagged(vals, count, largest, smallest, high, low, absolute: bool):
    """(rows, values) of the entries inside [low, high], from `_bracket_summary`'s cells.

    A cell with one or two bracketed entries gives them as its largest (and smallest); the rare
    cells with more are gathered from the block and filtered again.
    """
    body, tail = _grouped(vals)
    found_rows, found_values = [], []
    if body.shape[2]:
        width = body.shape[2]
        flat_count = count.reshape(-1)
        cells = flat_count.nonzero().squeeze(1)
        counts = flat_count[cells]
        rows = cells // width
        two = counts == 2
        found_rows += [rows, rows[two]]
        found_values += [largest.reshape(-1)[cells], smallest.reshape(-1)[cells[two]]]
        many = counts > 2
        if bool(many.any()):
            keep = ~many
            found_rows[0], found_values[0] = rows[keep], found_values[0][keep]
            crowded, crowded_rows = cells[many], rows[many]
            candidates = body[crowded_rows, :, crowded % width]  # [c, groups]
            if absolute:
                candidates = candidates.abs()
            inner = ((candidates >= low[crowded_rows]) & (candidates <= high[crowded_rows])).nonzero()
            found_rows.append(crowded_rows[inner[:, 0]])
            found_values.append(candidates[inner[:, 0], inner[:, 1]])
    if tail.shape[1]:
        if absolute:
            tail = tail.abs()
        inner = ((tail >= low) & (tail <= high)).nonzero()
        found_rows.append(inner[:, 0])
        found_values.append(tail[inner[:, 0], inner[:, 1]])
    return torch.cat(found_rows), torch.cat(found_values)


def order_keys(values: torch.Tensor, nonnegative: bool) -> torch.Tensor:
    """Integers that sort exactly like ``values`` (fp32 -> int32, fp64 -> int64; a view when possible).

    For non-negative floats the bit pattern already sorts like the value. For negative ones the
    magnitude bits are flipped, so larger magnitudes get smaller keys; +0.0 and -0.0 get adjacent
    keys, which is harmless since they compare equal as values.
    """
    integer = {torch.float32: torch.int32, torch.float64: torch.int64}.get(values.dtype)
    if integer is None:
        raise TypeError(f"selection works on fp32/fp64 values, got {values.dtype}")
    bits = values.view(integer)
    if nonnegative:
        return bits
    width = 32 if integer is torch.int32 else 64
    magnitude = (1 << (width - 1)) - 1
    return bits ^ ((bits >> (width - 1)) & magnitude)


@dataclass
class _Target:
    row: int
    rank: int  # rank still to find among entries whose key matches `prefix` at `shift`
    prefix: int | None  # key >> shift of the bucket, None before the first histogram
    shift: int
    bucket_size: int
    value: float | None = None


def kth_largest(
    tasks: TaskStream,
    values: Values,
    ranks: torch.Tensor,
    *,
    nonnegative: bool = False,
    granularity: str = "elements",
    sample_values: Values | None = None,
) -> torch.Tensor:
    """The ``ranks[t, j]``-th largest of ``values(tau, block)`` over all blocks, for every task t.

    ``values`` maps a ``[T, n]`` block to ``[T, n]`` finite fp32/fp64 values (e.g. ``tau.abs()``);
    ``ranks`` is an int ``[T, R]`` tensor with entries in [1, P] (1 = the maximum). Returns a
    ``[T, R]`` tensor of the selected values (dtype of ``values``). ``nonnegative=True`` promises
    values >= 0 (magnitudes), which makes the keys cheaper. ``sample_values`` computes the same
    values for a scattered sample (`ww.engine.streaming.SampledBlock`), for a ``values`` that reads a cache
    by block position; by default ``values`` itself, which must then depend on columns only.
    """
    ranks = torch.as_tensor(ranks, dtype=torch.int64)
    if ranks.dim() != 2 or ranks.shape[0] != tasks.num_tasks:
        raise ValueError(f"ranks must be [T={tasks.num_tasks}, R], got {tuple(ranks.shape)}")
    total = tasks.num_params
    if bool((ranks < 1).any()) or bool((ranks > total).any()):
        raise ValueError(f"ranks must lie in [1, {total}], got {ranks.tolist()}")
    if total <= DIRECT_LIMIT:
        return _direct(tasks, values, ranks, granularity)
    found = _bracketed(tasks, values, ranks, granularity, sample_values or values)
    if found is not None:
        return found
    return _radix(tasks, values, ranks, nonnegative, granularity)


def _radix(tasks: TaskStream, values: Values, ranks: torch.Tensor, nonnegative: bool, granularity: str) -> torch.Tensor:
    """Radix selection: a 16-bit histogram pass, then the named bucket collected (or refined)."""
    num_tasks = tasks.num_tasks
    width_of = {torch.float32: 32, torch.float64: 64}
    totals = _Accumulator()
    state = {"dtype": None}

    def top_digits(tau: torch.Tensor, block: Block) -> None:
        vals = values(tau, block)
        state["dtype"] = vals.dtype
        width = width_of[vals.dtype]
        digits = order_keys(vals, nonnegative) >> (width - DIGIT_BITS)
        rows = torch.arange(num_tasks, dtype=digits.dtype).unsqueeze(1)
        # One bincount over all tasks: bin = task·65536 + (top 16 bits as a signed digit + 32768).
        bins = (digits + (rows * _BINS + _BINS // 2)).reshape(-1)
        totals.add("top", torch.bincount(bins, minlength=num_tasks * _BINS))

    # Large blocks: a histogram costs T·65 536 bins per block whatever the block's size.
    tasks.scan(top_digits, granularity, block_entries=HISTOGRAM_BLOCK_ENTRIES)
    dtype = state["dtype"]
    width = width_of[dtype]
    histogram = totals.total("top").view(num_tasks, _BINS)
    targets = []
    for row in range(num_tasks):
        for rank in ranks[row].tolist():
            digit, left, size = _locate(histogram[row], rank)
            shift = width - DIGIT_BITS
            targets.append(_Target(row, left, digit - _BINS // 2, shift, size))

    while any(target.value is None for target in targets):
        pending = [target for target in targets if target.value is None]
        collect = [target for target in pending if target.bucket_size <= COLLECT_LIMIT or target.shift == 0]
        refine = [target for target in pending if target not in collect]

        refined = _Accumulator()

        def gather(tau: torch.Tensor, block: Block):
            vals = values(tau, block)
            keys = order_keys(vals, nonnegative)
            found = []
            for target in collect:
                match = (keys[target.row] >> target.shift) == target.prefix
                found.append(vals[target.row][match])
            for index, target in enumerate(refine):
                match = (keys[target.row] >> target.shift) == target.prefix
                next_shift = max(target.shift - DIGIT_BITS, 0)
                digits = (keys[target.row][match] >> next_shift) & (_BINS - 1)
                refined.add(index, torch.bincount(digits, minlength=_BINS))
            return found

        results = tasks.scan(gather, granularity)
        for index, target in enumerate(collect):
            bucket = torch.cat([found[index] for found in results])
            # the rank-th largest of the bucket = its (len - rank + 1)-th smallest
            target.value = float(torch.kthvalue(bucket, bucket.numel() - target.rank + 1).values)
        for index, target in enumerate(refine):
            counts = refined.total(index)
            digit, left, size = _locate(counts, target.rank)
            next_shift = max(target.shift - DIGIT_BITS, 0)
            target.prefix = (target.prefix << (target.shift - next_shift)) | digit
            target.shift, target.rank, target.bucket_size = next_shift, left, size
            if next_shift == 0:
                target.value = _key_to_value(target.prefix, dtype, nonnegative)
    out = torch.tensor([target.value for target in targets], dtype=dtype)
    return out.view(ranks.shape)


SAMPLE_ENTRIES = 1 << 18
"""Sampled entries per task for the bracket when the stream is read in windows (Floyd–Rivest)."""
SCATTERED_SAMPLE_ENTRIES = 1 << 20
"""Sampled entries per task when the stream can be read at scattered positions (resident banks)."""


def _sample_windows(tasks: TaskStream, granularity: str) -> tuple[list[Block], int]:
    """Short windows spread evenly over the whole vector, and the window length.

    Neighbouring entries are correlated (a row of a weight matrix shares its scale), so the
    sample is thousands of short windows rather than a few long ones (the bracket's margin
    accounts for the correlation left, see `_bracketed`); each window costs one small read, and
    small vectors get proportionally smaller samples.
    """
    window = 64
    count = max(1, min(SAMPLE_ENTRIES, tasks.num_params // 16) // window)
    blocks = tasks.blocks(granularity)
    total = tasks.num_params
    starts = [int(index * total / count) for index in range(count)]
    windows = []
    cursor = 0
    for start in starts:
        while blocks[cursor].stop <= start:
            cursor += 1
        block = blocks[cursor]
        stop = min(block.stop, start + window)
        windows.append(Block(block.name, block.shape, start, stop, block.offset + start - block.start))
    return windows, window


def _draw_sample(
    tasks: TaskStream, values: Values, granularity: str, sample_values: Values
) -> tuple[torch.Tensor, int]:
    """``values`` of a sample of every task, ``[T, m]``, and the length of its contiguous windows.

    A resident stream is sampled at independent scattered positions (window length 1): four
    times the entries of the windowed sample for less time, and no correlation to allow for, so
    brackets are several times narrower. A memory-mapped stream is read in windows instead, since
    scattered reads would fault in every page of the file.
    """
    total = tasks.num_params
    if tasks.sampler is not None:
        count = min(SCATTERED_SAMPLE_ENTRIES, max(1, total // 16))
        blocks = sample_blocks(tasks.layout, count)
        if blocks:  # none when every tensor's share rounds to 0 (thousands of tiny tensors)
            pieces = [sample_values(tasks.read_sample(sampled), sampled) for sampled in blocks]
            return torch.cat(pieces, dim=1), 1
    windows, window = _sample_windows(tasks, granularity)
    pieces = []
    for block in windows:
        pieces.append(values(tasks.read(block), block))
        if tasks.release is not None:  # memory-mapped: the kernel maps up to 64 KiB around a read
            tasks.release(max(0, block.start - (1 << 14)), min(total, block.stop + (1 << 14)))
    if tasks.release is not None:
        tasks.release(0, total)
    return torch.cat(pieces, dim=1), window


def sample_brackets(
    tasks: TaskStream,
    values: Values,
    ranks: torch.Tensor,
    granularity: str = "elements",
    sample_values: Values | None = None,
    sigmas: float = 6.0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per task and rank a bracket ``[lows, highs]`` (``[T, R]`` each) that holds the rank-th largest
    with high probability (Floyd–Rivest, see the module doc), and the largest fraction of the
    sample inside one bracket. The margin is ``sigmas`` standard deviations of the sample's rank
    (6: a miss about once in 10^9). Nothing is guaranteed: callers count exactly and fall back."""
    total = tasks.num_params
    sample, window = _draw_sample(tasks, values, granularity, sample_values or values)
    dtype = sample.dtype
    size = sample.shape[1]

    def sample_largest(row: int, rank: int) -> torch.Tensor:
        return torch.kthvalue(sample[row], size - rank + 1).values

    def design_effect(row: int, estimate: torch.Tensor) -> float:
        """Variance inflation of the sample count from correlation inside windows (>= 1)."""
        if window == 1:
            return 1.0
        hits = at_least(sample[row], estimate)
        usable = hits.numel() - hits.numel() % window
        per_window = hits[:usable].view(-1, window).mean(dim=1)
        spread = float(hits.var())
        return max(1.0, window * float(per_window.var()) / spread) if spread > 0 else 1.0

    slack = 0.001 if window > 1 else 0.0002
    lows = torch.empty(ranks.shape, dtype=dtype)
    highs = torch.empty(ranks.shape, dtype=dtype)
    infinity = torch.tensor(float("inf"), dtype=dtype)

    def bracket_row(row: int) -> float:
        """Fill row ``row`` of highs/lows (a task per worker: ``kthvalue`` is single-threaded)."""
        widest = 0.0
        for column, rank in enumerate(ranks[row].tolist()):
            quantile = rank / total
            expected = quantile * size
            inflation = (
                1.0 if window == 1 else design_effect(row, sample_largest(row, min(max(int(expected), 1), size)))
            )
            # ``sigmas`` standard deviations of the sample count, inflated by the measured
            # within-window correlation, plus a little slack
            margin = sigmas * (size * inflation * quantile * (1 - quantile)) ** 0.5 + slack * size + 8
            upper = int(expected - margin)
            lower = int(expected + margin)
            widest = max(widest, (min(lower, size) - max(upper, 0)) / size)
            lows[row, column] = sample_largest(row, lower) if lower <= size else -infinity
            if upper < 1:
                highs[row, column] = infinity
            elif lower <= size:  # the upper-th largest is among the values >= the lower-th largest
                head = sample[row][sample[row] >= lows[row, column]]
                highs[row, column] = torch.kthvalue(head, head.numel() - upper + 1).values
            else:
                highs[row, column] = sample_largest(row, upper)
        return widest

    widest = max(in_workers([lambda row=row: bracket_row(row) for row in range(ranks.shape[0])], tasks.workers))
    return lows, highs, widest


def _bracketed(
    tasks: TaskStream, values: Values, ranks: torch.Tensor, granularity: str, sample_values: Values
) -> torch.Tensor | None:
    """Sampling selection (see the module doc); None when some bracket missed its rank."""
    total = tasks.num_params
    lows, highs, widest = sample_brackets(tasks, values, ranks, granularity, sample_values)
    dtype = lows.dtype

    sparse = widest < 0.008  # below ~0.8 % of entries in a bracket, grouped scanning pays off

    over_counts = torch.zeros(ranks.shape, dtype=torch.int64)
    low_counts = torch.zeros(ranks.shape, dtype=torch.int64)
    collected: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(ranks.shape[1])]

    def keep(results) -> None:  # in the calling thread: copies, so worker arenas stay unfragmented
        for column, (over, from_low, rows, inside) in enumerate(results):
            over_counts[:, column] += over
            low_counts[:, column] += from_low
            collected[column].append((rows.to(torch.int32), inside.clone()))

    absolute = values is magnitudes
    summarise = bracket_summary.for_params(total)

    # the raw |τ| blocks are what the kernel sums: it validates them too, no separate pass
    validates = absolute and tasks.transform is None and tasks.check_finite and not tasks.state.validated

    # contiguous [T, 1] thresholds: one compiled variant whatever the number of ranks
    bounds = [
        (highs[:, column : column + 1].contiguous(), lows[:, column : column + 1].contiguous())
        for column in range(ranks.shape[1])
    ]
    pair = bracket_summary_pair.for_params(total) if ranks.shape[1] == 2 else None

    def count_and_collect_fused(tau: torch.Tensor, block: Block):
        vals = tau if absolute else values(tau, block)
        body, tail = _grouped(vals)
        summaries = None
        if pair is not None:  # both brackets in one read of the block
            both = pair(body, *bounds[0], *bounds[1], absolute)
            summaries = [both[:6], (*both[6:], both[5])]
        results = []
        for column in range(ranks.shape[1]):
            high, low = bounds[column]
            if summaries is not None:
                over, from_low, count, largest, smallest, total = summaries[column]
            else:
                over, from_low, count, largest, smallest, total = summarise(body, high, low, absolute)
            over, from_low = over.long(), from_low.long()
            if tail.shape[1]:
                tail = tail.abs() if absolute else tail
                over, from_low = over + (tail > high).sum(dim=1), from_low + (tail >= low).sum(dim=1)
                total = total + tail.sum()
            if validates and column == 0:
                tasks.check_block(tau, block, float(total))
            rows, inside = _collect_flagged(vals, count, largest, smallest, high, low, absolute)
            results.append((over, from_low, rows, inside))
        return results

    def count_and_collect(tau: torch.Tensor, block: Block):
        vals = values(tau, block)
        results = []
        for column in range(ranks.shape[1]):
            over = above(vals, highs[:, column : column + 1])
            from_low = at_least(vals, lows[:, column : column + 1])
            inside = from_low - over
            if sparse:
                rows, columns = sparse_nonzero(inside)
            else:
                found = inside.nonzero()
                rows, columns = found[:, 0], found[:, 1]
            results.append((over.sum(dim=1).long(), from_low.sum(dim=1).long(), rows, vals[rows, columns]))
        return results

    fused = summarise is not bracket_summary.eager
    if fused:
        tasks.scan(count_and_collect_fused, granularity, reduce=keep, validates=validates)
    else:
        tasks.scan(count_and_collect, granularity, reduce=keep)
    out = torch.empty(ranks.shape, dtype=dtype)
    for column in range(ranks.shape[1]):
        rows = torch.cat([rows for rows, _ in collected[column]])
        inside = torch.cat([inside for _, inside in collected[column]])
        collected[column].clear()
        for row in range(ranks.shape[0]):
            rank = int(ranks[row, column])
            above_count, low_count = int(over_counts[row, column]), int(low_counts[row, column])
            if not above_count < rank <= low_count:
                return None

        def select(row: int, column: int = column, rows=rows, inside=inside) -> None:
            bucket = inside[rows == row]
            rank = int(ranks[row, column]) - int(over_counts[row, column])
            out[row, column] = torch.kthvalue(bucket, bucket.numel() - rank + 1).values

        in_workers([lambda row=row: select(row) for row in range(ranks.shape[0])], tasks.workers)
    return out


def _direct(tasks: TaskStream, values: Values, ranks: torch.Tensor, granularity: str) -> torch.Tensor:
    """Small inputs: all values in memory, one ``kthvalue`` per rank (same result, less overhead)."""
    whole = torch.cat(tasks.scan(lambda tau, block: values(tau, block), granularity), dim=1)
    out = torch.empty(ranks.shape, dtype=whole.dtype)
    for row in range(ranks.shape[0]):
        for column, rank in enumerate(ranks[row].tolist()):
            out[row, column] = torch.kthvalue(whole[row], whole.shape[1] - rank + 1).values
    return out


class _Accumulator:
    """Integer histograms summed across blocks and worker threads (exact, so order is irrelevant)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sums: dict[object, torch.Tensor] = {}

    def add(self, key: object, counts: torch.Tensor) -> None:
        with self.lock:
            if key in self.sums:
                self.sums[key] += counts
            else:
                self.sums[key] = counts

    def total(self, key: object) -> torch.Tensor:
        return self.sums[key]


def _locate(histogram: torch.Tensor, rank: int) -> tuple[int, int, int]:
    """The bin holding the rank-th largest entry, the rank left inside it, and its size."""
    from_top = histogram.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, torch.tensor(rank, dtype=from_top.dtype)))
    digit = histogram.numel() - 1 - position
    before = int(from_top[position - 1]) if position > 0 else 0
    return digit, rank - before, int(histogram[digit])


def _key_to_value(key: int, dtype: torch.dtype, nonnegative: bool) -> float:
    """The float whose `order_keys` is ``key`` (the inverse map)."""
    integer = torch.int32 if dtype == torch.float32 else torch.int64
    bits = torch.tensor([key], dtype=integer)
    if not nonnegative:
        width = 32 if integer is torch.int32 else 64
        bits = bits ^ ((bits >> (width - 1)) & ((1 << (width - 1)) - 1))
    return float(bits.view(dtype)[0])


def kth_largest_magnitudes(tasks: TaskStream, counts: list[int]) -> torch.Tensor:
    """Per task t the ``counts[t]``-th largest |τt| over the whole flattened vector, as ``[T, 1]``."""
    ranks = torch.tensor(counts, dtype=torch.int64).view(-1, 1)
    return kth_largest(tasks, magnitudes, ranks, nonnegative=True)
