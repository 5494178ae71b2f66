"""Top-k merges in one pass over a resident bank: merge with the sample's bracket, redo the rest.

A merger that keeps each task's entries whose value (|τt| for TIES and DARE-TIES) reaches a global
threshold θt needs θt before its final pass, and exact selection (`ww.engine.selection`) reads
the bank once more to count and collect the values inside the sample's bracket [lowt, hight). That
pass costs as much as the merge itself. But an entry whose value is at or above hight is kept
whatever θt turns out to be, and one below lowt is dropped: only the columns where some task's
value falls inside its bracket (a few percent of them) depend on θt. So the final pass merges
every column as if θt were hight, and while it is at it counts, per task, the values at or above
hight and flags the uncertain columns. Every value
inside a bracket lies in a flagged column, so the counts and those columns give the exact rank of
θt inside its bracket and θt itself; only the flagged columns are merged again with the exact
thresholds and written over their speculative values (pooled again when weaving).

The result is bit-for-bit the one of the two-pass path, since both run the same compiled block
arithmetic on every column with thresholds that make the same keep/drop decisions. If a bracket
missed its rank (the exact counts say so), θ comes from the ordinary selection instead and the
columns whose decisions differ are found by one more scan; rare, never wrong.

Only for mergers whose kept values do not depend on θt's value (PCB's min-max rescaled weights
do, in every column: it keeps the two-pass path), and only for streams with a sampler (resident
rows: scattered reads are cheap); memory-mapped banks keep the two-pass path, since re-reading
scattered columns would fault in the whole file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from .selection import DIRECT_LIMIT, Values, kth_largest, magnitudes, sample_brackets
from .streaming import Block, TaskStream, in_workers, scattered_blocks

SIGMAS = 4.0
"""Bracket margin, in standard deviations of the sample's rank (the exact selection uses 6): a
miss is detected and costs an exact selection pass (probability ~3e-5 per bracket side), and a
narrower bracket flags fewer columns to merge again."""

SpeculativeKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
ExactKernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def applies(tasks: TaskStream) -> bool:
    """Whether `top_k_map` can run on ``tasks``: resident rows and more than a direct selection's worth."""
    return tasks.sampler is not None and tasks.num_params > DIRECT_LIMIT


def top_k_map(
    tasks: TaskStream,
    counts: list[int],
    speculate: SpeculativeKernel,
    exact: ExactKernel,
    *,
    values: Values = magnitudes,
    column_values: Values | None = None,
    nonnegative: bool = True,
) -> torch.Tensor:
    """The merger's output (`TaskStream.map`'s) where task t keeps the entries whose value is at least
    its ``counts[t]``-th largest value; values are |τt| by default.

    ``exact(tau, thresholds)`` merges a ``[T, n]`` block given ``[T, 1]`` thresholds;
    ``speculate(tau, highs, lows)`` returns that merge at ``highs`` plus, per column, 1.0 where some
    task's value lies in [lowt, hight) and 0.0 elsewhere, per task #(value >= hight) as floats, and
    a value that is finite iff the block is. ``values(tau, block)`` maps a block to its ``[T, n]``
    values (like `ww.engine.selection.kth_largest`'s); it must depend on each column alone, and
    ``column_values`` computes them for scattered columns (default: ``values``; called with the
    block None for the gathered uncertain columns); ``nonnegative`` promises values >= 0. Needs
    `applies(tasks)`.
    """
    column_values = column_values or values
    ranks = torch.tensor(counts, dtype=torch.int64).view(-1, 1)
    lows, highs, _ = sample_brackets(tasks, values, ranks, sigmas=SIGMAS, sample_values=column_values)
    lows, highs = lows.contiguous(), highs.contiguous()
    flagged: list[tuple[int, torch.Tensor]] = []
    at_high = torch.zeros(tasks.num_tasks, dtype=torch.float64)
    lock = threading.Lock()
    validates = tasks.transform is None and tasks.check_finite and not tasks.state.validated

    def merge(tau: torch.Tensor, block: Block) -> torch.Tensor:
        merged, uncertain, high_count, finite = speculate(tau, highs, lows)
        if validates:
            tasks.check_block(tau, block, float(finite))
        columns = uncertain.nonzero().squeeze(1)  # in the worker, while the flags are cached
        with lock:
            flagged.append((block.start, columns))
            at_high.add_(high_count)
        return merged

    out = tasks.map(merge, validates=validates)
    flagged.sort(key=lambda item: item[0])
    gathered = _Columns(tasks, torch.cat([columns + start for start, columns in flagged]))
    flagged.clear()  # the gathered copy is all that is needed from here on
    over, wanted = at_high.long(), ranks.squeeze(1)
    inside = _inside(tasks, gathered, column_values, lows, highs)
    if bool(((over < wanted) & (wanted <= over + torch.tensor([found.numel() for found in inside]))).all()):
        thresholds = _select(tasks, inside, wanted - over, highs)
    else:  # a bracket missed its rank: exact selection, then the columns whose decisions differ
        thresholds = kth_largest(
            tasks.without_finish(), values, ranks, nonnegative=nonnegative, sample_values=column_values
        ).to(highs.dtype)
        gathered = _Columns(tasks, _changed_columns(tasks, values, thresholds, highs))
    _redo(tasks, out, gathered, exact, thresholds)
    return out


class _Columns:
    """The (transformed) ``[T, m]`` columns of a stream at sorted flat positions, read by ww's workers.

    ``values`` holds them all, tensor after tensor; ``blocks`` says which tensor each run of
    columns belongs to (a `SampledBlock` per tensor, in the same order).
    """

    def __init__(self, tasks: TaskStream, positions: torch.Tensor) -> None:
        self.blocks = scattered_blocks(tasks.layout, positions)
        self.values = torch.empty(tasks.num_tasks, positions.numel(), dtype=tasks.dtype)
        starts = [0]
        for block in self.blocks:
            starts.append(starts[-1] + block.size)
        self.starts = starts

        def read(index: int) -> None:
            self.values[:, starts[index] : starts[index + 1]] = tasks.read_sample(self.blocks[index])

        in_workers([lambda index=index: read(index) for index in range(len(self.blocks))], tasks.workers)


def _inside(
    tasks: TaskStream, columns: _Columns, column_values: Values, lows: torch.Tensor, highs: torch.Tensor
) -> list[torch.Tensor]:
    """Per task the values in [lowt, hight) among the gathered columns: every one of them, since a
    column holding one is flagged."""
    # one call over all columns (values depend on columns alone): per-tensor calls would hit
    # shapes that make a compiled kernel specialise and recompile mid-run
    values = column_values(columns.values, None)

    def collect(row: int) -> torch.Tensor:
        return values[row][(values[row] >= lows[row]) & (values[row] < highs[row])]

    return in_workers([lambda row=row: collect(row) for row in range(highs.shape[0])], tasks.workers)


def _select(tasks: TaskStream, inside: list[torch.Tensor], ranks: torch.Tensor, highs: torch.Tensor) -> torch.Tensor:
    """Per task the ``ranks[t]``-th largest of ``inside[t]``, as ``[T, 1]``."""
    thresholds = torch.empty_like(highs)

    def select(row: int) -> None:
        values = inside[row]
        thresholds[row] = torch.kthvalue(values, values.numel() - int(ranks[row]) + 1).values

    in_workers([lambda row=row: select(row) for row in range(highs.shape[0])], tasks.workers)
    return thresholds


def _changed_columns(tasks: TaskStream, values: Values, thresholds: torch.Tensor, highs: torch.Tensor) -> torch.Tensor:
    """Flat positions of the columns where keeping values >= θt and values >= hight differ for some task."""
    lower, upper = torch.minimum(thresholds, highs), torch.maximum(thresholds, highs)

    def find(tau: torch.Tensor, block: Block) -> torch.Tensor:
        found = values(tau, block)
        return ((found >= lower) & (found < upper)).any(dim=0).nonzero().squeeze(1) + block.start

    found = tasks.without_finish().scan(find)
    return torch.cat(found) if found else torch.empty(0, dtype=torch.int64)


def _redo(tasks: TaskStream, out: torch.Tensor, columns: _Columns, exact, thresholds) -> None:
    """Merge the gathered columns with the exact thresholds (and pool them when weaving) into ``out``.

    One kernel call over all columns: per-tensor calls would hit shapes (a single column) that
    make a compiled kernel specialise and recompile mid-run.
    """
    if not columns.blocks:
        return
    merged = exact(columns.values, thresholds)
    for index, block in enumerate(columns.blocks):
        part = merged[columns.starts[index] : columns.starts[index + 1]]
        if tasks.finish is not None:
            part = tasks.finish(block, part)
        out[block.flat_positions()] = part.to(out.dtype)
