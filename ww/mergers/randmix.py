"""Randmix as a merger: per element, the entry of a uniformly random task (METHODS §2)."""

from __future__ import annotations

import torch

from ..engine.blockops import pick_rows, select_by_index
from ..engine.compiling import Kernel
from ..engine.counter_rng import key_words, stream_key, uniform_indices, uniform_indices_wide
from ..engine.streaming import Block, TaskStream
from ..kernels import compiled_for
from ..registry import merger

RANDMIX_LABEL = "randmix"
"""Stream label of randmix pooling (`ww.pooling`)."""
MERGER_LABEL = "randmix-merger"
"""The merger's own label: weaving randmix with randmix pooling must not reuse the pooling's draws."""


def random_rows(seed: int, label: str, block: Block, count: int, device: torch.device) -> torch.Tensor:
    """For each entry of ``block`` an index uniform in [0, count), a pure function of
    (seed, label, tensor name, in-tensor position): independent of chunking, device and tensor order."""
    key = stream_key(seed, label, block.name)
    return uniform_indices(key, block.positions(device), count)


def _picked_rows(tau: torch.Tensor, offset: torch.Tensor, key: torch.Tensor, count: int) -> torch.Tensor:
    """`random_rows` + `pick_rows` for a contiguous block in one fused loop (``count`` <= 128):
    the same draws as `uniform_indices`, at positions ``offset``, ``offset`` + 1, ..."""
    pick = uniform_indices_wide(torch.arange(tau.shape[1], device=tau.device) + offset, key, count)
    return select_by_index([tau[t] for t in range(tau.shape[0])], pick.to(torch.int32))  # see `select_by_index`


picked_rows = Kernel(_picked_rows, name="randmix_merger")


def _randmix_compiled(tau: torch.Tensor, block: Block, seed: int) -> torch.Tensor:
    if tau.shape[0] > 128:
        return pick_rows(tau, random_rows(seed, MERGER_LABEL, block, tau.shape[0], tau.device))
    keys = key_words(stream_key(seed, MERGER_LABEL, block.name), tau.device)
    offset = torch.tensor(block.offset, dtype=torch.int64, device=tau.device)
    return picked_rows.compiled(tau, offset, keys, tau.shape[0])


@merger(
    name="randmix",
    revision=2,  # 2: as a pooling function it draws from a seed derived from the trial's (was 0)
    citation="Marczak et al., MagMax: Leveraging Model Merging for Seamless Continual Learning, "
    "ECCV 2024, arXiv 2407.06322 (random mixing baseline)",
)
def randmix(tasks: TaskStream, *, seed: int = 0) -> torch.Tensor:
    """Per element one task's entry, the task drawn uniformly with the counter-based stream of
    `ww.engine.counter_rng` keyed by (seed, "randmix-merger", tensor name); its paper uses λ = 1.0."""
    count = tasks.num_tasks
    if compiled_for(tasks.num_params):
        return tasks.map(lambda tau, block: _randmix_compiled(tau, block, seed))
    return tasks.map(lambda tau, block: pick_rows(tau, random_rows(seed, MERGER_LABEL, block, count, tau.device)))
