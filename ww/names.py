"""Error messages for unknown names, with a "did you mean" hint.

Every registry lookup in `ww` (mergers, poolings, λ grids, hyper-parameters) goes through here so a
typo always gets the same helpful message (docs/DESIGN.md, reliability: messages that say what to do).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_name_error(kind: str, name: object, known: Iterable[str]) -> ValueError:
    """A ValueError for `name` not among `known`, suggesting the closest spelling if any."""
    known = sorted(known)
    message = f"unknown {kind} {name!r}"
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {close[0]!r}?"
    message += f" Known {kind}s: {', '.join(known) if known else '(none)'}."
    return ValueError(message)
