"""Content keys: every artifact is addressed by a hash of everything that determines it.

Resume, caching and de-duplication all rest on this one function: two runs that would compute the
same thing compute the same key, so the second finds the first's output and skips the work.

"Everything" includes the code. Data and settings enter a key as values (resolved
hyper-parameters, recipes, seeds); code enters it as a *revision*: each merger and pooling carries
its own (`ww.registry`), a merger defined in a spec plugin a hash of its module's source, and each
stage of the harness one of `REVISIONS` below. A change that alters an artifact bumps the revision
of the code that produced it, so exactly the artifacts downstream of that code get new keys and are
recomputed by the next ``run``; everything else stays valid.
"""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any

#: Layout of the key text itself (what `content_key` wraps around a payload). It is not a code
#: version: change it only when the hashing scheme changes shape, which invalidates every artifact
#: of every root. A changed method or stage bumps its own revision instead.
KEY_LAYOUT = "2"

REVISIONS: MappingProxyType[str, int] = MappingProxyType(
    {
        "pretrain": 1,
        "toy_data": 2,
        "finetune": 1,
        "heads": 1,
        "eval": 1,
    }
)
"""Revision of each stage of the harness, hashed into the keys of what that stage produces.

Bump a stage's number (by one, in the same commit) whenever a change makes it produce different
values from the same inputs; leave it for speed-ups and refactors that keep every value.

- ``pretrain``: the toy θ0's contrastive pre-training (`benchmark.toy`) → the toy θ0's key, hence
  every head, expert and trial built on it. Real θ0s are downloaded weights: not versioned here.
- ``toy_data``: generation of the offline toy suite (`benchmark.toy`, `benchmark.data.loaders`) → the toy
  tensor cache, and the experts and trials that train or test on those tensors. Real images are
  versioned by ``benchmark.data.images.PREPROCESS_VERSION``, already part of their keys.
- ``finetune``: the fine-tuning loop (`benchmark.experts.finetune`, `benchmark.experts.training`) → expert keys,
  hence bank and trial keys.
- ``heads``: zero-shot head computation (`benchmark.model.heads`) → head keys, the cached zero-shot
  accuracies and trial keys.
- ``eval``: a trial's path from the merged vector to its accuracies (applying it to θ0, the
  weaving driver `ww.weave`, `benchmark.trials.evaluation`) → trial keys and the cached zero-shot
  accuracies.

A merger's or pooling's own change bumps its registry revision (`ww.registry`), not ``eval``.
Result rows record the revisions that produced them (``*_revision`` columns).
"""


def revision(stage: str) -> int:
    """The current revision of a harness stage (read at call time, so tests may patch `REVISIONS`)."""
    try:
        return REVISIONS[stage]
    except KeyError:
        raise KeyError(f"no revision for stage {stage!r}; stages: {sorted(REVISIONS)}") from None


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal content always serialises identically."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_fallback)


def _fallback(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot hash {type(obj).__name__} into a content key")


def content_key(kind: str, payload: Any, length: int = 16) -> str:
    """A short hex digest of ``(kind, KEY_LAYOUT, payload)``; ``kind`` keeps namespaces apart.

    The payload must name the revisions of the code that produces the artifact (`REVISIONS`, the
    registry's): this function adds none itself.
    """
    # the field's name predates KEY_LAYOUT; renaming it would invalidate every key of every root
    text = canonical_json({"kind": kind, "code_version": KEY_LAYOUT, "payload": payload})
    return hashlib.sha256(text.encode()).hexdigest()[:length]
