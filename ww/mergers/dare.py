"""DARE: drop each task-vector entry with probability p, rescale survivors by 1/(1−p) (docs/METHODS.md §2).

Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free
Lunch", ICML 2024, arXiv 2311.03099. The dropped vectors are then merged by task arithmetic
(``dare_ta``) or TIES (``dare_ties``); p = 0.5 by default for fully fine-tuned CLIP experts.

The drop mask of task t at entry i of tensor ``name`` is a pure function of (seed, name, t, i),
drawn from the counter-based stream of `ww.engine.counter_rng` (16-bit draws: an entry is dropped when
its draw, uniform over 0..65535, is below round(p·65536); p is thus resolved to 2^-16, within
1.6e-5 of the requested value). So the merge is the same whatever the block size, the device or the
order of the tensors, and the dropped bank is never materialised: DARE is a transform of the
stream that the second merger reads through. The compiled drop mask is in
``ww/mergers/_fused/dare.py``.
"""

from __future__ import annotations

import torch

from ..engine.compiling import Kernel
from ..engine.counter_rng import lanes16, stream_key
from ..engine.streaming import Block, TaskStream
from ..hyperparams import Interval
from ..registry import merger
from ._fused import dare as fused
from .task_arithmetic import task_arithmetic
from .ties import ties

DARE_LABEL = "dare"


def _drop_eager(tau, positions, offset, keys, cutoff: int, scale: float) -> torch.Tensor:
    """τ with entries dropped and survivors × scale.

    The entries sit at in-tensor ``positions`` (int64), or at ``offset``, ``offset`` + 1, ... when
    ``positions`` is None (a contiguous block: the compiled form then makes them in registers);
    ``keys`` ``[2, G]`` holds the low and high 32 bits of each task pair's stream key.
    """
    if positions is None:
        positions = torch.arange(tau.shape[1], device=tau.device) + offset
    keep = torch.empty(tau.shape, dtype=tau.dtype, device=tau.device)
    lanes16([low | high << 32 for low, high in zip(*keys.tolist())], positions, tau.shape[0], out=keep)
    # keep = 1 where draw >= cutoff: (draw - cutoff + 1) clamped to [0, 1], exact on integers
    return keep.sub_(cutoff - 1).clamp_(0, 1).mul_(tau).mul_(scale)


drop_block = Kernel(_drop_eager, fused.drop_block, name="dare_drop")


def pair_keys(seed: int, name: str, num_tasks: int) -> torch.Tensor:
    """``[2, G]`` int64: low and high 32 bits of the stream key of task pairs 0..G-1 of tensor ``name``."""
    keys = [stream_key(seed, DARE_LABEL, name, str(group)) for group in range((num_tasks + 1) // 2)]
    return torch.tensor([[key & 0xFFFFFFFF for key in keys], [key >> 32 for key in keys]], dtype=torch.int64)


drop_sum_block = Kernel(lambda *args: _drop_eager(*args).sum(dim=0), fused.drop_sum_block, name="dare_drop_sum")


def _with_drop(kernel: Kernel, tasks: TaskStream, p: float, seed: int):
    """``function(tau, block)`` applying ``kernel`` (a drop, or drop-and-sum) with DARE's draws."""
    # drop when the draw, read as signed int16 (uniform over -32768..32767), is below q - 32768
    cutoff = round(p * 65536) - 32768
    scale = 1.0 / (1.0 - p)
    run = kernel.for_params(tasks.num_params)
    keys: dict[str, torch.Tensor] = {}

    def apply(tau: torch.Tensor, block: Block) -> torch.Tensor:
        if block.name not in keys:  # a benign race: both threads compute the same keys
            keys[block.name] = pair_keys(seed, block.name, tau.shape[0])
        key = keys[block.name].to(tau.device)
        if isinstance(block, Block):  # contiguous: positions offset, offset + 1, ...
            offset = torch.tensor(block.offset, dtype=torch.int64, device=tau.device)
            return run(tau, None, offset, key, cutoff, scale)
        return run(tau, block.positions(tau.device), None, key, cutoff, scale)

    return apply


def dropped(tasks: TaskStream, p: float, seed: int) -> TaskStream:
    """The stream of DARE-processed task vectors: entries dropped with probability p, rest × 1/(1−p)."""
    if p == 0:
        return tasks
    return tasks.derive(transform=_with_drop(drop_block, tasks, p, seed))


_P_RANGE = {"p": Interval(0.0, 1.0, low_closed=True, high_closed=False)}


@merger(
    name="dare_ta",
    revision=2,  # 2: as a pooling function it draws from a seed derived from the trial's (was 0)
    citation="Yu et al., Language Models are Super Mario (DARE), ICML 2024, arXiv 2311.03099; then task arithmetic",
    ranges=_P_RANGE,
)
def dare_ta(tasks: TaskStream, *, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    """Task arithmetic over the DARE-dropped task vectors (p in [0, 1); p = 0 is plain TA).

    The drop and the sum are one kernel here, so the dropped block is never written out.
    """
    if p == 0:
        return task_arithmetic(tasks)
    return tasks.map(_with_drop(drop_sum_block, tasks, p, seed))


@merger(
    name="dare_ties",
    revision=2,  # 2: as a pooling function it draws from a seed derived from the trial's (was 0)
    citation="Yu et al., Language Models are Super Mario (DARE), ICML 2024, arXiv 2311.03099; "
    "then TIES-merging, arXiv 2306.01708",
    ranges={**_P_RANGE, "k": Interval(0.0, 1.0)},
)
def dare_ties(tasks: TaskStream, *, p: float = 0.5, k: float = 0.2, seed: int = 0) -> torch.Tensor:
    """TIES (global top-k trimming, k = 0.2) over the DARE-dropped task vectors."""
    return ties(dropped(tasks, p, seed), k=k)
