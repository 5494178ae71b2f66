"""Analyses of a set of task vectors: geometry and interference (docs/METHODS.md §4), in torch only.

Why these: merging works when task vectors do not fight. Their geometry (cosines of whole vectors,
per tensor and per transformer block) says how much they overlap; interference measures say where
a merger has to arbitrate (TIES's sign conflicts among the largest entries, which task wins an
element under MagMax or randmix, how many tasks a TALL mask keeps an entry for). The measures here
reuse the mergers' own rules (`ww.mergers.ties.top_k_thresholds`, MagMax's last-argmax, randmix's
counter-based draws, consensus's TALL masks), so they describe what the mergers actually do.

Every function takes task vectors in any form the public API takes (a `TaskVectorBank`, a list of
state dicts, a dict name → state dict) and streams over the flat bank block by block, so memory
stays bounded whatever P is (a memory-mapped `ww.open_bank` bank works too). Inner products are
accumulated in float64: a cosine of two 10^8-entry fp32 vectors summed in fp32 would lose digits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .bank import as_bank
from .engine.blockops import last_argmax
from .engine.streaming import Block
from .mergers.consensus import tall_masks
from .mergers.randmix import MERGER_LABEL, random_rows
from .mergers.ties import top_k_thresholds

_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:resblocks|blocks|layers|layer|h)\.(\d+)\.")
_HEAD_PARTS = ("ln_post", "proj", "head", "fc_norm", "norm", "attn_pool")


def block_of(name: str) -> str:
    """The group of a tensor for per-block geometry: ``"block 3"`` for ``...resblocks.3....``.

    Tensors outside the transformer blocks are "embed" (patch embedding, class and positional
    embeddings, pre-norm) or "head" (final norm and projection: ``ln_post``, ``proj``, ``head``...),
    decided by the first component of the name, since open_clip lists ``proj`` before the blocks.
    """
    match = _BLOCK_INDEX.search(name)
    if match:
        return f"block {int(match.group(1))}"
    first = name.split(".", 1)[0]
    return "head" if first in _HEAD_PARTS else "embed"


def group_order(groups) -> list[str]:
    """Group labels in network order: "embed", "block 0", "block 1", ..., "head", then any others."""

    def rank(label: str):
        if label == "embed":
            return (0, 0, label)
        match = re.fullmatch(r"block (\d+)", label)
        if match:
            return (1, int(match.group(1)), label)
        return (2, 0, label) if label == "head" else (3, 0, label)

    return sorted(groups, key=rank)


# ----------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class Grams:
    """Gram matrices ⟨τi, τj⟩ (float64 ``[T, T]``) of the whole vectors, per tensor and per group.

    Kept as Grams rather than cosines because every linear recombination of the task vectors
    (increments of a sequential chain, sub-banks) has its Gram as ``D G Dᵀ`` without another pass.
    """

    task_names: tuple[str, ...]
    whole: torch.Tensor
    per_tensor: dict[str, torch.Tensor]
    per_group: dict[str, torch.Tensor]


def gram_matrices(task_vectors, group: Callable[[str], str] = block_of) -> Grams:
    """All inner products ⟨τi, τj⟩ in one streaming pass, whole / per tensor / per ``group(name)``."""
    bank = as_bank(task_vectors)
    count = len(bank)
    per_tensor = {name: torch.zeros(count, count, dtype=torch.float64) for name, _ in bank.layout}

    def partial(tau: torch.Tensor, block: Block) -> tuple[str, torch.Tensor]:
        rows = tau.to(torch.float64)
        return block.name, rows @ rows.T

    def add(result) -> None:
        name, gram = result
        per_tensor[name] += gram

    bank.stream().scan(partial, reduce=add)
    whole = torch.zeros(count, count, dtype=torch.float64)
    per_group: dict[str, torch.Tensor] = {}
    for name, gram in per_tensor.items():
        whole += gram
        label = group(name)
        per_group[label] = per_group.get(label, torch.zeros_like(gram)) + gram
    return Grams(bank.task_names, whole, per_tensor, {label: per_group[label] for label in group_order(per_group)})


def cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """cos(τi, τj) = G_ij / √(G_ii G_jj); NaN where a vector is zero (no direction to compare)."""
    norms = gram.diagonal().clamp(min=0).sqrt()
    outer = norms.unsqueeze(0) * norms.unsqueeze(1)
    cosines = gram / outer
    cosines[outer == 0] = float("nan")
    return cosines.clamp(-1.0, 1.0)


def cosine_matrix(task_vectors) -> torch.Tensor:
    """Pairwise cosine of the whole flattened task vectors, float64 ``[T, T]``."""
    return cosine_from_gram(gram_matrices(task_vectors).whole)


def increment_gram(gram: torch.Tensor) -> torch.Tensor:
    """Gram of the increments δs = τs − τs−1 (δ1 = τ1) of cumulative task vectors ``D G Dᵀ``.

    In a sequential chain (docs/METHODS.md §3) θs starts from θs−1 yet τs = θs − θ0, so cumulative task
    vectors share their history by construction; what split s itself learned is δs = θs − θs−1.
    Rows must be in chain order.
    """
    count = gram.shape[0]
    difference = torch.eye(count, dtype=gram.dtype) - torch.diag(torch.ones(count - 1, dtype=gram.dtype), -1)
    return difference @ gram @ difference.T


def increment_cosines(task_vectors) -> torch.Tensor:
    """Pairwise cosine of the increments θs − θs−1 of a chain of cumulative task vectors."""
    return cosine_from_gram(increment_gram(gram_matrices(task_vectors).whole))


def sqrt_ratio_baseline(count: int) -> torch.Tensor:
    """cos(τs, τt) = √(s/t) (s ≤ t, 1-based) that cumulative vectors of a chain have by construction.

    If the increments were orthogonal with equal norms, ⟨τs, τt⟩ = min(s, t) and |τs|² = s, so
    cos = min(s, t)/√(st) = √(min/max). Sequential task vectors more correlated than this share
    directions beyond the chaining itself.
    """
    index = torch.arange(1, count + 1, dtype=torch.float64)
    low = torch.minimum(index.unsqueeze(0), index.unsqueeze(1))
    high = torch.maximum(index.unsqueeze(0), index.unsqueeze(1))
    return (low / high).sqrt()


def mean_off_diagonal(matrix: torch.Tensor) -> float:
    """Mean of the entries i ≠ j that are not NaN (NaN if there are none)."""
    count = matrix.shape[0]
    mask = ~torch.eye(count, dtype=torch.bool) & ~torch.isnan(matrix)
    return float(matrix[mask].mean()) if bool(mask.any()) else float("nan")


# ----------------------------------------------------------------------------------------------
# Interference


@dataclass(frozen=True)
class SignConflicts:
    """Sign conflicts among each task's top-k entries (see `sign_conflicts` for the definitions)."""

    task_names: tuple[str, ...]
    k: float
    kept: torch.Tensor  # [T] entries each task keeps (non-zero, |τt| ≥ its threshold)
    both: torch.Tensor  # [T, T] entries kept by both i and j
    disagree: torch.Tensor  # [T, T] of those, entries whose signs differ
    union: int  # entries kept by at least one task
    shared: int  # entries kept by at least two tasks
    conflicting: int  # entries where one kept entry is > 0 and another < 0

    @property
    def pairwise_rate(self) -> torch.Tensor:
        """disagree / both per pair (NaN where the two top-k sets do not intersect); diagonal 0."""
        both = self.both.to(torch.float64)
        rate = self.disagree.to(torch.float64) / both
        rate[both == 0] = float("nan")
        return rate

    @property
    def rate(self) -> float:
        """Conflicting ÷ shared: among entries two or more tasks keep, the fraction whose signs disagree."""
        return self.conflicting / self.shared if self.shared else float("nan")

    @property
    def rate_of_union(self) -> float:
        """Conflicting ÷ union: the fraction of all kept entries where TIES's sign election arbitrates."""
        return self.conflicting / self.union if self.union else float("nan")


def sign_conflicts(task_vectors, k: float = 0.2) -> SignConflicts:
    """Sign-conflict rates among top-k entries, with TIES's trimming rule (docs/METHODS.md §2).

    Task t *keeps* entry p when τt[p] ≠ 0 and |τt[p]| ≥ its global threshold, the ⌈k·P⌉-th largest
    |τt| over the whole flattened vector (`ww.mergers.ties.top_k_thresholds`; ties at the
    threshold are kept). Then:

    - pairwise, for tasks i ≠ j: among the entries both keep (the intersection of their top-k
      sets), the fraction where sign(τi) ≠ sign(τj); for random independent signs this is 1/2;
    - overall: among the entries kept by at least two tasks, the fraction where some kept entry is
      positive and another negative (where TIES's elected sign discards a kept value); also
      reported over the union of all top-k sets (`SignConflicts.rate_of_union`).
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k!r}")
    bank = as_bank(task_vectors)
    count = len(bank)
    stream = bank.stream()
    thresholds = top_k_thresholds(stream, float(k))
    totals = {
        "both": torch.zeros(count, count, dtype=torch.float64),
        "agree_minus_disagree": torch.zeros(count, count, dtype=torch.float64),
        "union": 0,
        "shared": 0,
        "conflicting": 0,
    }

    def partial(tau: torch.Tensor, block: Block):
        magnitude = tau.abs()
        signs = torch.sign(tau) * (magnitude >= thresholds)
        signs = signs.to(torch.float64)
        kept = signs.abs()
        positive = (signs > 0).sum(dim=0)
        negative = (signs < 0).sum(dim=0)
        users = positive + negative
        return (
            kept @ kept.T,
            signs @ signs.T,
            int((users > 0).sum()),
            int((users > 1).sum()),
            int(((positive > 0) & (negative > 0)).sum()),
        )

    def add(result) -> None:
        both, signed, union, shared, conflicting = result
        totals["both"] += both
        totals["agree_minus_disagree"] += signed
        totals["union"] += union
        totals["shared"] += shared
        totals["conflicting"] += conflicting

    stream.scan(partial, reduce=add)
    both = totals["both"].round().long()
    disagree = ((totals["both"] - totals["agree_minus_disagree"]) / 2).round().long()
    return SignConflicts(
        task_names=bank.task_names,
        k=float(k),
        kept=both.diagonal().clone(),
        both=both,
        disagree=disagree,
        union=totals["union"],
        shared=totals["shared"],
        conflicting=totals["conflicting"],
    )


@dataclass(frozen=True)
class SelectionShares:
    """How many entries each task supplies when a merger picks one task per entry."""

    task_names: tuple[str, ...]
    magmax: torch.Tensor  # [T] counts: MagMax's winner (largest |τt|, ties to the later task)
    randmix: torch.Tensor  # [T] counts: randmix's draw with `seed`
    counted: int  # entries where at least one task vector is non-zero
    seed: int

    @property
    def magmax_share(self) -> torch.Tensor:
        return self.magmax.to(torch.float64) / max(self.counted, 1)

    @property
    def randmix_share(self) -> torch.Tensor:
        return self.randmix.to(torch.float64) / max(self.counted, 1)


def selection_shares(task_vectors, seed: int = 0) -> SelectionShares:
    """The share of entries each task contributes under MagMax and under randmix (docs/METHODS.md §2).

    MagMax's winner is its own rule (`ww.engine.blockops.last_argmax` of |τ|, ties to the later task);
    randmix's pick is the very draw ``ww.merge("randmix", ..., seed=seed)`` makes (the counter-
    based stream keyed by seed, "randmix-merger" and the tensor name), whose expected share is 1/T.
    Entries where every task vector is 0 are not counted: no task contributes anything there, and
    MagMax's tie rule would credit them all to the last task.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    bank = as_bank(task_vectors)
    count = len(bank)
    totals = {
        "magmax": torch.zeros(count, dtype=torch.long),
        "randmix": torch.zeros(count, dtype=torch.long),
        "counted": 0,
    }

    def partial(tau: torch.Tensor, block: Block):
        magnitude = tau.abs()
        live = magnitude.amax(dim=0) > 0
        winners = last_argmax(magnitude)[live]
        draws = random_rows(seed, MERGER_LABEL, block, count, tau.device)[live]
        return (torch.bincount(winners, minlength=count), torch.bincount(draws, minlength=count), int(live.sum()))

    def add(result) -> None:
        magmax, randmix, counted = result
        totals["magmax"] += magmax
        totals["randmix"] += randmix
        totals["counted"] += counted

    bank.stream().scan(partial, reduce=add)
    return SelectionShares(bank.task_names, totals["magmax"], totals["randmix"], totals["counted"], seed)


@dataclass(frozen=True)
class ConsensusHistogram:
    """How many tasks' TALL masks use each entry (Consensus Merging, docs/METHODS.md §2)."""

    task_names: tuple[str, ...]
    tall_lambda: float
    users: torch.Tensor  # [T + 1]: users[u] = entries used by exactly u tasks
    per_task: torch.Tensor  # [T]: entries each task's mask uses

    @property
    def unused(self) -> int:
        return int(self.users[0])

    @property
    def selfish(self) -> int:
        """Used by exactly one task: zeroed by consensus with k = 2 although a task relies on them."""
        return int(self.users[1])

    @property
    def shared(self) -> int:
        """Used by two or more tasks: what consensus with k = 2 keeps."""
        return int(self.users[2:].sum())


def consensus_histogram(task_vectors, tall_lambda: float = 0.4) -> ConsensusHistogram:
    """Counts of entries used by 0, 1, 2, ..., T tasks, with the TALL masks of the consensus merger.

    Task t uses entry p when |τt[p]| ≥ λ·|τMTL[p] − τt[p]| (`ww.mergers.consensus.tall_masks`, the
    function the merger itself calls), λ = 0.4 data-free by default.
    """
    if isinstance(tall_lambda, bool) or not isinstance(tall_lambda, (int, float)) or not tall_lambda >= 0:
        raise ValueError(f"tall_lambda must be a number >= 0, got {tall_lambda!r}")
    bank = as_bank(task_vectors)
    count = len(bank)
    totals = {"users": torch.zeros(count + 1, dtype=torch.long), "per_task": torch.zeros(count, dtype=torch.float64)}

    def partial(tau: torch.Tensor, block: Block):
        masks = tall_masks(tau, float(tall_lambda))
        users = masks.sum(dim=0).long()
        return torch.bincount(users, minlength=count + 1), masks.to(torch.float64).sum(dim=1)

    def add(result) -> None:
        users, per_task = result
        totals["users"] += users
        totals["per_task"] += per_task

    bank.stream().scan(partial, reduce=add)
    return ConsensusHistogram(bank.task_names, float(tall_lambda), totals["users"], totals["per_task"].round().long())


__all__ = [
    "ConsensusHistogram",
    "Grams",
    "SelectionShares",
    "SignConflicts",
    "block_of",
    "consensus_histogram",
    "cosine_from_gram",
    "cosine_matrix",
    "gram_matrices",
    "group_order",
    "increment_cosines",
    "increment_gram",
    "mean_off_diagonal",
    "selection_shares",
    "sign_conflicts",
    "sqrt_ratio_baseline",
]
