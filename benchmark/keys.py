"""Content keys: every artifact is addressed by a hash of everything that determines it.

Resume, caching and de-duplication all rest on this one function: two runs that would compute the
same thing compute the same key, so the second finds the first's output and skips the work.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Bump when a change to the harness changes what an artifact contains (invalidates every key).
CODE_VERSION = "2"


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
    """A short hex digest of ``(kind, CODE_VERSION, payload)``; ``kind`` keeps namespaces apart."""
    text = canonical_json({"kind": kind, "code_version": CODE_VERSION, "payload": payload})
    return hashlib.sha256(text.encode()).hexdigest()[:length]
