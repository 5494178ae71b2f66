"""Paired statistics over per-example correctness: bootstrap intervals and exact McNemar tests.

Every configuration of a grid is evaluated on the same test examples, and each result row keeps
which of them it got right (``correct_bits``: one bit per example, in the order of the task's
fixed test split). Two configurations can therefore be compared example by example. A *paired*
interval resamples the test examples once and scores both configurations on the same resample, so
the examples both get right or both get wrong — most of them — cancel, and the interval reflects
only the examples on which they differ. Two independent intervals would count the shared
difficulty of the test set twice and be far wider.

What is resampled, and how it is aggregated (docs/METHODS.md, "Paired comparisons"):

- one bootstrap draw per test split — per (setup, eval task), with replacement, as many examples
  as the split has — shared by every trial, seed, λ and model evaluated on that split, so
  everything in one report is resampled jointly;
- on each replicate, the leaderboard's aggregation is replayed exactly: per trial the mean over its
  eval tasks (normalised: merged ÷ expert per task, the expert's accuracy held fixed), an oracle
  trial's best λ re-chosen on the replicate, per seed the mean over pooled trials, then the mean
  over seeds; the paper tables' means over models and setups follow the same way;
- the interval is the percentile interval of the replicated difference; the test-set sampling is
  the only source of randomness it covers. Seeds (the fine-tuning and merge randomness) are
  reported separately as the spread of the per-seed differences.

Rows written before per-example bits existed (results schemas 1 and 2) have no bits: everything they
enter is reported without an interval.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from benchmark.report.leaderboard import variant_name

#: Replicates per interval; with 2000 the Monte-Carlo error of a 95 % percentile bound is a small
#: fraction of the interval's width.
N_BOOT = 2000
#: The draws are seeded (per split, from this and the split's name), so a report is reproducible.
BOOT_SEED = 0
DEFAULT_LEVEL = 95.0
FIXED, ORACLE = "fixed", "oracle"
#: θ0 itself, not merged: its zero-shot rows, comparable with any merge (``--compare ties/avg/A* zeroshot``)
ZEROSHOT = "zeroshot"
VARIANT_NAMES = {"collaborative": "A*", "a*": "A*", "plain": "A", "a": "A"}


# ------------------------------------------------------------------------------------------ bits


def pack_correct(correct) -> bytes:
    """Per-example outcomes (bool, test-split order) as bytes: 8 examples per byte, little bit order."""
    return np.packbits(np.asarray(correct, dtype=bool).ravel(), bitorder="little").tobytes()


def unpack_correct(blob: bytes, n: int) -> np.ndarray:
    """The inverse of :func:`pack_correct` for a split of ``n`` examples."""
    if len(blob) != (n + 7) // 8:
        raise ValueError(f"correct_bits hold {8 * len(blob)} outcomes, the row says n_examples = {n}")
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=n, bitorder="little").astype(bool)


# ----------------------------------------------------------------------------------- primitives


def mcnemar_exact(a, b) -> dict:
    """Exact two-sided McNemar test of two models' outcomes on the same examples.

    Only the discordant examples carry information: under "equally accurate", each is won by
    either model with probability 1/2, so the count won by one is Binomial(discordant, 1/2).
    Returns the two discordant counts and the two-sided p-value (1 when there are none).
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same examples: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    if discordant == 0:
        p = 1.0
    else:
        from scipy.stats import binom

        p = min(1.0, 2.0 * float(binom.cdf(min(only_a, only_b), discordant, 0.5)))
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The central ``level`` % percentile interval of bootstrap replicates."""
    if not 0 < level < 100:
        raise ValueError(f"confidence level {level} must lie in (0, 100)")
    tail = (100 - level) / 200
    low, high = np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1 - tail])
    return float(low), float(high)


def _split_seed(split: tuple, seed: int) -> list[int]:
    digest = hashlib.sha256(repr(split).encode()).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


def replicate_indices(split: tuple, n: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED, chunk: int | None = None):
    """The bootstrap draws of one split: ``[rows, n]`` blocks of example indices, ``n_boot`` rows in
    all, always the same for the same split, size and seed (chunked to bound memory)."""
    rng = np.random.default_rng(_split_seed(split, seed))
    chunk = chunk or max(1, min(n_boot, (1 << 22) // max(n, 1)))
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def replicate_accuracies(split: tuple, bits: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """Accuracy of each outcome vector (rows of ``bits``, ``[K, n]``) on the observed split and on
    each replicate of :func:`replicate_indices`: ``[1 + n_boot, K]``, row 0 observed.

    A replicate's accuracy is (how often each example was drawn) · outcomes / n, one matrix
    product for all K vectors, so every vector of the split sees the very same draw.
    """
    bits = np.asarray(bits, dtype=np.float64)
    k, n = bits.shape
    out = np.empty((1 + n_boot, k))
    out[0] = bits.mean(axis=1)
    row = 1
    for idx in replicate_indices(split, n, n_boot, seed):
        offsets = (np.arange(len(idx)) * n)[:, None]
        counts = np.bincount((idx + offsets).ravel(), minlength=len(idx) * n).reshape(len(idx), n)
        out[row : row + len(idx)] = counts.astype(np.float64) @ bits.T / n
        row += len(idx)
    return out


# ------------------------------------------------------------------------------ configurations


def config_of(row: dict):
    """A row's configuration as the paper tables name it: ``"fixed"``, ``"oracle"`` or (pooling, variant)."""
    policy = row["lambda_policy"]
    if policy == "reference":
        return ZEROSHOT if row["merger"] == ZEROSHOT else None
    if policy == "fixed":
        return FIXED
    if policy == "oracle":
        return ORACLE
    if policy == "weave":
        return (row["pooling"], variant_name(row["collaborative"]))
    return None


def config_label(merger: str, config) -> str:
    """The leaderboard's name of a configuration: ``ties/none``, ``ties/oracle``, ``ties/avg/A*``, ``zeroshot``."""
    if config == ZEROSHOT:
        return ZEROSHOT
    if config == FIXED:
        return f"{merger}/none"
    if config == ORACLE:
        return f"{merger}/oracle"
    return f"{merger}/{config[0]}/{config[1]}"


def parse_config(text: str, available: dict[str, set]) -> tuple[str, object]:
    """``"ties/avg/A*"`` → ("ties", ("avg", "A*")); ``ties/none`` → fixed λ; ``ties/oracle``; ``zeroshot``.

    ``available``: merger → its configurations in the root; a name that is not there fails naming
    what is (and a weaving pooling without a variant is accepted when only one variant exists).
    """
    parts = [p.strip() for p in text.split("/")]
    known = sorted(config_label(m, c) for m, cs in available.items() for c in cs)
    hint = f"configurations in this root: {', '.join(known) if known else '(none)'}"
    if parts == [ZEROSHOT]:
        if ZEROSHOT not in available.get(ZEROSHOT, set()):
            raise ValueError(
                f"--compare {text!r}: this root's zero-shot rows have no per-example results (written before "
                f"they were kept); re-run the spec to write them; {hint}"
            )
        return ZEROSHOT, ZEROSHOT
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(
            f"--compare {text!r}: name a configuration as MERGER/POOLING[/VARIANT], e.g. ties/avg/A* "
            f"or ties/none; {hint}"
        )
    merger, pooling = parts[0], parts[1]
    if pooling in ("none", "oracle"):
        if len(parts) == 3:
            raise ValueError(f"--compare {text!r}: pooling {pooling} has no variant (write {merger}/{pooling}); {hint}")
        config = FIXED if pooling == "none" else ORACLE
    else:
        if len(parts) == 3:
            if parts[2].lower() not in VARIANT_NAMES:
                raise ValueError(
                    f"--compare {text!r}: variant {parts[2]!r} is not A* (collaborative) or A (plain); {hint}"
                )
            config = (pooling, VARIANT_NAMES[parts[2].lower()])
        else:
            variants = sorted(c[1] for c in available.get(merger, ()) if isinstance(c, tuple) and c[0] == pooling)
            if len(variants) != 1:
                raise ValueError(
                    f"--compare {text!r}: give the variant ({merger}/{pooling}/A* or {merger}/{pooling}/A); {hint}"
                )
            config = (pooling, variants[0])
    if config not in available.get(merger, set()):
        raise ValueError(f"--compare {text!r}: no such configuration; {hint}")
    return merger, config


# ------------------------------------------------------------------------------------ the index


@dataclass
class _Trial:
    key: str
    seed: int
    #: eval task → λ (None unless oracle) → (split, column in that split's replicate matrix)
    vectors: dict = field(default_factory=lambda: defaultdict(dict))
    expert: dict = field(default_factory=dict)  # eval task → expert accuracy (normalisation)
    complete: bool = True  # every row of the trial has bits


class PairedStats:
    """Replicated leaderboard values of every configuration in a set of result rows.

    ``rows``: result rows as dicts (``benchmark.report.leaderboard.ok_rows``). Rows without bits leave their
    trial (and everything it enters) without replicates: :meth:`samples` returns None there.
    """

    def __init__(self, rows: list[dict], n_boot: int = N_BOOT, seed: int = BOOT_SEED):
        self.n_boot = n_boot
        self.trials: dict[tuple, dict[tuple, _Trial]] = defaultdict(dict)  # (model, setup, merger, config) → trials
        vectors: dict[tuple, list[np.ndarray]] = defaultdict(list)
        self.missing_bits = 0
        for row in rows:
            if row.get("status", "ok") != "ok":
                continue
            config = config_of(row)
            if config is None or (config == ZEROSHOT and row.get("correct_bits") is None):
                continue  # experts (each on its own task) are no configuration; θ0 only with its outcomes
            group = (row["model"], row["setup"], row["merger"], config)
            trial = self.trials[group].setdefault(
                (row["trial_key"], row["seed"]), _Trial(row["trial_key"], row["seed"])
            )
            trial.expert[row["eval_task"]] = row.get("expert_accuracy")
            blob = row.get("correct_bits")
            if blob is None or row.get("n_examples") is None:
                trial.complete = False
                self.missing_bits += 1
                continue
            split = (row["setup"], row["eval_task"], int(row["n_examples"]))
            lam = row["lam"] if config == ORACLE else None
            trial.vectors[row["eval_task"]][lam] = (split, len(vectors[split]))
            vectors[split].append(unpack_correct(blob, int(row["n_examples"])))
        self.replicates = {
            split: replicate_accuracies(split, np.stack(vs), n_boot, seed) for split, vs in vectors.items()
        }
        self._bits = vectors

    # -- lookups

    def configurations(self, with_bits: bool = False) -> dict[str, set]:
        """merger → its configurations in the rows (``with_bits``: only those with per-example results)."""
        out: dict[str, set] = defaultdict(set)
        for (_, _, merger, config), trials in self.trials.items():
            if not with_bits or any(t.complete and t.vectors for t in trials.values()):
                out[merger].add(config)
        return out

    def blocks(self, merger_a: str, config_a, merger_b: str, config_b) -> list[tuple[str, str]]:
        """(model, setup) pairs where both configurations were run."""
        a = {(m, s) for (m, s, mg, c) in self.trials if (mg, c) == (merger_a, config_a)}
        b = {(m, s) for (m, s, mg, c) in self.trials if (mg, c) == (merger_b, config_b)}
        return sorted(a & b)

    def bits(self, split: tuple, column: int) -> np.ndarray:
        return self._bits[split][column]

    # -- replicated scores

    def _task_scores(self, trial: _Trial, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        """[1 + B, L] task-mean accuracy and metric per λ (L = 1 unless oracle), or None."""
        if not trial.complete or not trial.vectors:
            return None
        tasks = sorted(trial.vectors)
        lams = sorted({lam for t in tasks for lam in trial.vectors[t]}, key=lambda x: (x is None, x))
        acc = np.zeros((1 + self.n_boot, len(lams)))
        value = np.zeros_like(acc)
        for task in tasks:
            weight = 1.0
            if metric == "normalized":
                expert = trial.expert.get(task)
                if not expert:
                    return None
                weight = 1.0 / expert
            for j, lam in enumerate(lams):
                if lam not in trial.vectors[task]:
                    return None
                split, column = trial.vectors[task][lam]
                task_acc = self.replicates[split][:, column]
                acc[:, j] += task_acc
                value[:, j] += weight * task_acc
        return acc / len(tasks), value / len(tasks)

    def trial_samples(self, trial: _Trial, metric: str = "accuracy") -> np.ndarray | None:
        """A trial's score on the data and each replicate: the task mean; an oracle trial's best λ
        (by task-mean accuracy, ties → the smallest λ) is re-chosen on every replicate."""
        scores = self._task_scores(trial, metric)
        if scores is None:
            return None
        acc, value = scores
        best = np.argmax(acc, axis=1)  # first maximum = smallest λ, as the leaderboard breaks ties
        return np.take_along_axis(value, best[:, None], axis=1)[:, 0]

    def seed_samples(
        self, model: str, setup: str, merger: str, config, metric: str = "accuracy"
    ) -> dict[int, np.ndarray] | None:
        """seed → the mean over that seed's trials (the leaderboard's step 2), or None."""
        trials = self.trials.get((model, setup, merger, config))
        if not trials:
            return None
        per_seed: dict[int, list[np.ndarray]] = defaultdict(list)
        for trial in trials.values():
            samples = self.trial_samples(trial, metric)
            if samples is None:
                return None
            per_seed[trial.seed].append(samples)
        return {seed: np.mean(xs, axis=0) for seed, xs in sorted(per_seed.items())}

    def samples(self, model: str, setup: str, merger: str, config, metric: str = "accuracy") -> np.ndarray | None:
        """The leaderboard value (mean over seeds) on the data (index 0) and on each replicate."""
        per_seed = self.seed_samples(model, setup, merger, config, metric)
        return None if per_seed is None else np.mean(list(per_seed.values()), axis=0)

    def observed_bits(self, model: str, setup: str, merger: str, config) -> dict[tuple, np.ndarray]:
        """(seed, eval task) → the outcomes each trial was scored with (an oracle trial: at its best
        λ on the data); a seed with several pooled trials is left out (no single model to test)."""
        out = {}
        trials = self.trials.get((model, setup, merger, config), {})
        seeds = defaultdict(list)
        for trial in trials.values():
            seeds[trial.seed].append(trial)
        for seed, group in seeds.items():
            if len(group) != 1 or not group[0].complete or not group[0].vectors:
                continue
            trial = group[0]
            scores = self._task_scores(trial, "accuracy")
            if scores is None:
                continue
            lams = sorted({lam for t in trial.vectors for lam in trial.vectors[t]}, key=lambda x: (x is None, x))
            best = lams[int(np.argmax(scores[0][0]))]
            for task, per_lam in trial.vectors.items():
                out[(seed, task)] = self.bits(*per_lam[best])
        return out


def interval_text(low: float, high: float) -> str:
    return f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def seed_spread(differences: list[float]) -> str:
    """Per-seed differences as text: mean ± sample std over n seeds (min … max)."""
    if len(differences) < 2:
        return "one seed"
    mean = sum(differences) / len(differences)
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (len(differences) - 1))
    return (
        f"{100 * mean:+.2f} ± {100 * std:.2f} over {len(differences)} seeds "
        f"({100 * min(differences):+.2f} … {100 * max(differences):+.2f})"
    )
