"""`TaskVectorBank`: T task vectors stacked into one flat ``[T, P]`` tensor.

Why flat: global mergers (TIES top-k over the whole encoder, docs/METHODS.md §2) and element-wise pooling
(docs/METHODS.md §1) are one vectorised operation across tasks on a ``[T, P]`` matrix, and the harness can
share one read-only array between many trials (docs/DESIGN.md, data flow step 5). The bank never writes
into ``data``: it may be backed by a read-only buffer.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .engine.streaming import DEFAULT_BLOCK_ENTRIES, TaskStream, bank_stream
from .layout import Layout, layout_numel, layout_slices, normalize_layout
from .precision import compute_dtype

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class TaskVectorBank:
    """Task vectors τ1..τT as rows of ``data`` (shape ``[T, P]``, one float dtype).

    ``layout`` orders the tensors (name, shape); their flattened entries are consecutive in that
    order. ``task_names`` names the rows. ``data`` may be memory-mapped (`ww.open_bank`, or a
    numpy/safetensors memmap wrapped with `from_flat`): mergers read it block by block.
    """

    data: torch.Tensor
    layout: Layout
    task_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.data, torch.Tensor) or self.data.dim() != 2:
            raise ValueError("bank data must be a 2-D tensor [T tasks, P parameters]")
        if self.data.shape[0] < 1:
            raise ValueError("a task-vector bank needs at least one task vector")
        if not self.data.is_floating_point():
            raise ValueError(f"bank data must be floating point, got {self.data.dtype}")
        object.__setattr__(self, "layout", normalize_layout(self.layout))
        object.__setattr__(self, "task_names", tuple(str(name) for name in self.task_names))
        if layout_numel(self.layout) != self.data.shape[1]:
            raise ValueError(
                f"layout describes {layout_numel(self.layout)} parameters but data has {self.data.shape[1]} columns"
            )
        if len(self.task_names) != self.data.shape[0]:
            raise ValueError(f"{len(self.task_names)} task names for {self.data.shape[0]} task vectors")
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"task names must be unique, got {self.task_names}")

    @classmethod
    def from_flat(
        cls,
        data: torch.Tensor,
        layout: Iterable[tuple[str, Iterable[int]]],
        task_names: Sequence[str] | None = None,
    ) -> TaskVectorBank:
        """Wrap an existing ``[T, P]`` tensor without copying it (it may be read-only)."""
        if task_names is None and isinstance(data, torch.Tensor) and data.dim() == 2:
            task_names = _default_task_names(data.shape[0])
        return cls(data=data, layout=tuple(layout), task_names=tuple(task_names or ()))

    @classmethod
    def from_state_dicts(
        cls,
        task_vectors: Sequence[StateDict] | Mapping[str, StateDict],
        task_names: Sequence[str] | None = None,
    ) -> TaskVectorBank:
        """Stack task-vector state dicts (a list, or a dict task name -> state dict) into a bank.

        All state dicts must hold the same float tensors (names, shapes, one dtype); the layout
        follows the first one's key order. The inputs are copied, never modified: the bank is a
        second copy of them (`ww.merge` and `ww.weave` read state dicts in place instead, through
        `StateDictTasks`). The copy is filled tensor by tensor, so nothing beyond the inputs and
        the bank is ever held.
        """
        state_dicts, names, layout, dtype = _parse_state_dicts(task_vectors, task_names)
        first = next(iter(state_dicts[0].values()), None)
        device = first.device if first is not None else torch.device("cpu")
        data = torch.empty((len(state_dicts), layout_numel(layout)), dtype=dtype, device=device)
        slices = layout_slices(layout)
        for row, state_dict in zip(data, state_dicts):
            for name, piece in slices.items():
                row[piece].copy_(state_dict[name].reshape(-1))
        return cls(data=data, layout=layout, task_names=tuple(names))

    def __len__(self) -> int:
        return self.data.shape[0]

    def stream(self, *, block_entries: int | None = None, workers: int | None = None) -> TaskStream:
        """The task vectors as a `TaskStream` (what mergers run on), block by block.

        A bank opened with `ww.open_bank` hands its page release to the stream, so resident
        memory stays bounded by the blocks in flight whatever the bank's size.
        """
        return bank_stream(
            self.data,
            self.layout,
            self.task_names,
            release=getattr(self, "_release", None),
            block_entries=block_entries,
            workers=workers,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The task vectors' dtype (what a merge returns)."""
        return self.data.dtype

    @property
    def file_backed(self) -> bool:
        """True for a bank memory-mapped by `ww.open_bank` (out-of-core)."""
        return getattr(self, "_release", None) is not None

    @property
    def num_params(self) -> int:
        """P, the number of scalar entries of one task vector."""
        return self.data.shape[1]

    def slices(self) -> dict[str, slice]:
        """Tensor name -> its slice of a flat vector."""
        return layout_slices(self.layout)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat ``[P]`` vector as a state dict of views into it (no copy; they share storage)."""
        if flat.dim() != 1 or flat.shape[0] != self.num_params:
            raise ValueError(f"expected a flat vector of {self.num_params} entries, got {tuple(flat.shape)}")
        shapes = dict(self.layout)
        return {name: flat[piece].view(shapes[name]) for name, piece in self.slices().items()}

    def select(self, tasks: Sequence[int | str]) -> TaskVectorBank | BankRows:
        """Some of the task vectors (row indices or task names, in the order given), without
        copying ``data``: a view when the rows are consecutive, else `BankRows`, which gathers the
        chosen rows block by block as a merge reads them. What `ww.merge` and `ww.weave` accept
        like a bank (e.g. leave-one-domain-out: every task but one)."""
        rows = [self._row(task) for task in tasks]
        if not rows:
            raise ValueError("select needs at least one task")
        if len(set(rows)) != len(rows):
            raise ValueError(f"select got a task twice: {list(tasks)}")
        if rows == list(range(len(self))):
            return self
        names = [self.task_names[row] for row in rows]
        if rows == list(range(rows[0], rows[0] + len(rows))):
            view = TaskVectorBank(self.data[rows[0] : rows[0] + len(rows)], self.layout, tuple(names))
            for hook in ("_release", "_mapping"):  # a memory-mapped bank's view keeps its page release
                if hasattr(self, hook):
                    object.__setattr__(view, hook, getattr(self, hook))
            return view
        return BankRows(self, rows)

    def _row(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self.task_names:
                raise ValueError(f"unknown task {task!r}; tasks: {', '.join(self.task_names)}")
            return self.task_names.index(task)
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(self):
            raise ValueError(f"task index {task!r} out of range for a bank of {len(self)} task vectors")
        return task

    def state_dict(self, task: int | str) -> dict[str, torch.Tensor]:
        """Task vector ``task`` (row index or task name) as a state dict of views into ``data``."""
        if isinstance(task, str):
            if task not in self.task_names:
                raise ValueError(f"unknown task {task!r}; tasks: {', '.join(self.task_names)}")
            task = self.task_names.index(task)
        return self.unflatten(self.data[task])


class BankRows:
    """Some rows of a `TaskVectorBank`, read in place (`TaskVectorBank.select`): each block of the
    chosen rows is gathered as a merge reads it, so selecting T − 1 of T tasks costs no copy of
    the bank. Merges and weaves give exactly what they give on a bank of those rows."""

    def __init__(self, bank: TaskVectorBank, rows: Sequence[int]) -> None:
        self.bank = bank
        self.rows = tuple(int(row) for row in rows)
        self._index = torch.tensor(self.rows, dtype=torch.long, device=bank.data.device)
        self.layout: Layout = bank.layout
        self.task_names: tuple[str, ...] = tuple(bank.task_names[row] for row in self.rows)
        self.dtype: torch.dtype = bank.dtype

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def data(self) -> torch.Tensor:
        """The whole bank's ``[T, P]`` data (shared, never copied); `rows` says which rows count."""
        return self.bank.data

    @property
    def num_params(self) -> int:
        return self.bank.num_params

    def stream(self, *, block_entries: int | None = None, workers: int | None = None) -> TaskStream:
        """The chosen rows as a `TaskStream` (resident like the bank; a memory-mapped bank's page
        release applies)."""
        data, index = self.bank.data, self._index
        release = getattr(self.bank, "_release", None)

        def load(block) -> torch.Tensor:
            return data[:, block.start : block.stop].index_select(0, index)

        def sample(sampled) -> torch.Tensor:
            return data.index_select(1, sampled.flat_positions(data.device)).index_select(0, index)

        def load_row(block, task: int) -> torch.Tensor:
            return data[self.rows[task], block.start : block.stop]

        return TaskStream(
            loader=load,
            num_tasks=len(self),
            layout=self.layout,
            dtype=compute_dtype(self.dtype),
            labels=self.task_names,
            block_entries=block_entries or DEFAULT_BLOCK_ENTRIES,
            workers=workers,
            release=release,
            in_memory=release is None,
            sampler=sample if release is None else None,
            row_loader=load_row,
        )

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat ``[P]`` vector as a state dict of views into it (as `TaskVectorBank.unflatten`)."""
        return self.bank.unflatten(flat)


class StateDictTasks:
    """T task-vector state dicts read in place: what `ww.merge` and `ww.weave` run on when given
    state dicts, so a merge holds the caller's inputs plus its output and a few blocks, never a
    stacked ``[T, P]`` copy of the inputs.

    Blocks are gathered from the T tensors of one name as they are read (a block is a few MiB, so
    the gather stays in cache); the inputs are only read, never modified or retained beyond the
    merge. Tensors that are not contiguous are copied once (a flat view of them is not possible).
    """

    def __init__(
        self,
        task_vectors: Sequence[StateDict] | Mapping[str, StateDict],
        task_names: Sequence[str] | None = None,
    ) -> None:
        state_dicts, names, layout, dtype = _parse_state_dicts(task_vectors, task_names)
        self.layout: Layout = layout
        self.task_names: tuple[str, ...] = tuple(str(name) for name in names)
        if len(self.task_names) != len(state_dicts):
            raise ValueError(f"{len(self.task_names)} task names for {len(state_dicts)} task vectors")
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"task names must be unique, got {self.task_names}")
        self.dtype: torch.dtype = dtype
        # per tensor name, the T flat views (contiguous tensors only; others copied once)
        self._flats = {name: [state_dict[name].reshape(-1) for state_dict in state_dicts] for name, _ in layout}
        first = next(iter(self._flats.values()))[0]
        self._device = first.device
        slices = layout_slices(layout)
        self._starts = [piece.start for piece in slices.values()]
        self._names = list(slices)
        self._ranges = {name: (piece.start, piece.stop) for name, piece in slices.items()}

    def __len__(self) -> int:
        return len(self.task_names)

    @property
    def num_params(self) -> int:
        return layout_numel(self.layout)

    def _load(self, block) -> torch.Tensor:
        out = torch.empty((len(self), block.stop - block.start), dtype=compute_dtype(self.dtype), device=self._device)
        span = self._ranges.get(block.name)
        if span is not None and span[0] <= block.start and block.stop <= span[1]:  # a block inside one tensor
            lo = block.start - span[0]
            for row, flat in zip(out, self._flats[block.name]):
                row.copy_(flat[lo : lo + block.stop - block.start])
            return out
        # any other range (a whole-vector read): tensor by tensor
        index = max(0, bisect.bisect_right(self._starts, block.start) - 1)
        while index < len(self._names) and self._starts[index] < block.stop:
            name = self._names[index]
            start, stop = self._ranges[name]
            lo, hi = max(start, block.start), min(stop, block.stop)
            if hi > lo:
                for row, flat in zip(out, self._flats[name]):
                    row[lo - block.start : hi - block.start].copy_(flat[lo - start : hi - start])
            index += 1
        return out

    def _load_row(self, block, task: int) -> torch.Tensor:
        span = self._ranges.get(block.name)
        if span is not None and span[0] <= block.start and block.stop <= span[1]:  # a view of the input
            return self._flats[block.name][task][block.start - span[0] : block.stop - span[0]]
        return self._load(block)[task]

    def _sample(self, sampled) -> torch.Tensor:
        indices = sampled.indices.to(self._device)
        rows = [flat.index_select(0, indices) for flat in self._flats[sampled.name]]
        return torch.stack(rows).to(compute_dtype(self.dtype))

    def stream(self, *, block_entries: int | None = None, workers: int | None = None) -> TaskStream:
        """The task vectors as a `TaskStream`, block by block.

        Not ``in_memory``: the rows are resident, but a merge of state dicts promises the inputs
        plus one model, so mergers do not add a ``[T, P]`` cache of their own (PCB recomputes).
        """
        return TaskStream(
            loader=self._load,
            num_tasks=len(self),
            layout=self.layout,
            dtype=compute_dtype(self.dtype),
            labels=self.task_names,
            block_entries=block_entries or DEFAULT_BLOCK_ENTRIES,
            workers=workers,
            in_memory=False,
            sampler=self._sample,
            row_loader=self._load_row,
        )

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat ``[P]`` vector as a state dict of views into it (no copy; they share storage)."""
        if flat.dim() != 1 or flat.shape[0] != self.num_params:
            raise ValueError(f"expected a flat vector of {self.num_params} entries, got {tuple(flat.shape)}")
        shapes = dict(self.layout)
        return {name: flat[start:stop].view(shapes[name]) for name, (start, stop) in self._ranges.items()}


def _parse_state_dicts(
    task_vectors: Sequence[StateDict] | Mapping[str, StateDict], task_names: Sequence[str] | None
) -> tuple[list[StateDict], Sequence[str], Layout, torch.dtype]:
    """The state dicts, their task names, the common layout and dtype; ValueError on any mismatch."""
    if isinstance(task_vectors, Mapping):
        if task_vectors and all(isinstance(v, torch.Tensor) for v in task_vectors.values()):
            raise ValueError(
                "got a single state dict; pass a list of task-vector state dicts or a dict task name -> state dict"
            )
        names = tuple(str(name) for name in task_vectors) if task_names is None else task_names
        state_dicts = list(task_vectors.values())
    else:
        state_dicts = list(task_vectors)
        names = _default_task_names(len(state_dicts)) if task_names is None else task_names
    if not state_dicts:
        raise ValueError("a task-vector bank needs at least one task vector")
    layout, dtype = _layout_of(state_dicts[0], "task vector 0")
    for index, state_dict in enumerate(state_dicts[1:], start=1):
        _check_matches(state_dict, layout, dtype, f"task vector {index}")
    return state_dicts, names, layout, dtype


def _default_task_names(count: int) -> tuple[str, ...]:
    return tuple(f"task_{index}" for index in range(count))


def _layout_of(state_dict: StateDict, label: str) -> tuple[Layout, torch.dtype]:
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{label} must be a dict of tensors, got {type(state_dict).__name__}")
    dtypes = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{label}: entry {name!r} is not a float tensor ({kind}); task vectors hold floats only")
        dtypes.add(tensor.dtype)
    if len(dtypes) > 1:
        raise ValueError(f"{label} mixes dtypes {sorted(map(str, dtypes))}; convert to one dtype first")
    if not dtypes:
        raise ValueError(f"{label} is empty")
    layout = normalize_layout((name, tensor.shape) for name, tensor in state_dict.items())
    return layout, dtypes.pop()


def _check_matches(state_dict: StateDict, layout: Layout, dtype: torch.dtype, label: str) -> None:
    other_layout, other_dtype = _layout_of(state_dict, label)
    expected = dict(layout)
    got = dict(other_layout)
    for name in expected:
        if name not in got:
            raise ValueError(f"{label} lacks tensor {name!r} that task vector 0 has")
    for name, shape in got.items():
        if name not in expected:
            raise ValueError(f"{label} has tensor {name!r} that task vector 0 lacks")
        if shape != expected[name]:
            raise ValueError(f"{label}: tensor {name!r} has shape {shape}, task vector 0 has {expected[name]}")
    if other_dtype != dtype:
        raise ValueError(f"{label} has dtype {other_dtype}, task vector 0 has {dtype}")


def as_bank(task_vectors: TaskVectorBank | Sequence[StateDict] | Mapping[str, StateDict]) -> TaskVectorBank:
    """Accept every form the public API takes: a bank, a list of state dicts, or a dict name -> state dict."""
    if isinstance(task_vectors, TaskVectorBank):
        return task_vectors
    if isinstance(task_vectors, (str, bytes, torch.Tensor)):
        raise ValueError("task_vectors must be a TaskVectorBank, a list of state dicts or a dict name -> state dict")
    return TaskVectorBank.from_state_dicts(task_vectors)


def as_tasks(
    task_vectors: TaskVectorBank | BankRows | Sequence[StateDict] | Mapping[str, StateDict],
) -> TaskVectorBank | BankRows | StateDictTasks:
    """What a merge runs on: a bank (or `BankRows`) as it is, state dicts read in place
    (`StateDictTasks`, no copy)."""
    if isinstance(task_vectors, (TaskVectorBank, BankRows)):
        return task_vectors
    if isinstance(task_vectors, (str, bytes, torch.Tensor)):
        raise ValueError("task_vectors must be a TaskVectorBank, a list of state dicts or a dict name -> state dict")
    return StateDictTasks(task_vectors)
