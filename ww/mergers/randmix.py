"""Randmix as a merger: per element, the entry of a uniformly random task (docs/METHODS.md §2).

The compiled draw-and-pick loop is in ``ww/mergers/_fused/randmix.py``.
"""

from __future__ import annotations

import torch

from ..engine.blockops import pick_rows
from ..engine.counter_rng import stream_key, uniform_indices
from ..engine.streaming import Block, TaskStream
from ..kernels import compiled_for
from ..registry import merger
from ._fused import randmix as fused

RANDMIX_LABEL = "randmix"
"""Stream label of randmix pooling (`ww.pooling`)."""
MERGER_LABEL = "randmix-merger"
"""The merger's own label: weaving randmix with randmix pooling must not reuse the pooling's draws."""


def random_rows(seed: int, label: str, block: Block, count: int, device: torch.device) -> torch.Tensor:
    """For each entry of ``block`` an index uniform in [0, count), a pure function of
    (seed, label, tensor name, in-tensor position): independent of chunking, device and tensor order."""
    key = stream_key(seed, label, block.name)
    return uniform_indices(key, block.positions(device), count)


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
    if compiled_for(tasks.num_params) and count <= fused.MAX_TASKS:
        return tasks.map(lambda tau, block: fused.randmix_block(tau, block, seed, MERGER_LABEL))
    return tasks.map(lambda tau, block: pick_rows(tau, random_rows(seed, MERGER_LABEL, block, count, tau.device)))
