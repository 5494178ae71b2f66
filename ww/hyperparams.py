"""Validation of merger hyper-parameters, derived from the merger function's signature.

As in mergekit's ``easy_define``, a merger's keyword-only arguments with defaults *are* its
hyper-parameters: their names are the valid keys, their defaults fix the expected type, and an
optional `Interval` per name bounds the value. No merger writes its own validation code.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A real interval; ``Interval(0, 1)`` is (0, 1], the range of TIES's k."""

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = False
    high_closed: bool = True

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        return f"{'[' if self.low_closed else '('}{self.low}, {self.high}{']' if self.high_closed else ')'}"


def hyperparameters_of(function: Callable) -> dict[str, object]:
    """Hyper-parameter name -> default, read from ``function(tasks, *, name=default, ...)``.

    Raises TypeError when the signature does not have that shape, so a malformed merger fails at
    registration rather than at the first merge.
    """
    parameters = list(inspect.signature(function).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not parameters or parameters[0].kind not in positional:
        raise TypeError(f"{function.__name__} must take the task stream positionally first")
    defaults = {}
    for parameter in parameters[1:]:
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY or parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"{function.__name__}: hyper-parameter {parameter.name!r} must be keyword-only with a default"
            )
        defaults[parameter.name] = parameter.default
    return defaults


def resolve_hyperparameters(
    method: str,
    defaults: Mapping[str, object],
    ranges: Mapping[str, Interval],
    given: Mapping[str, object],
) -> dict[str, object]:
    """The defaults overridden by ``given``, after checking names, types and ranges (ValueError)."""
    for key in given:
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "none"
            close = difflib.get_close_matches(str(key), list(defaults), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ValueError(f"{method} has no hyper-parameter {key!r}{hint} Valid hyper-parameters: {valid}.")
    resolved = dict(defaults)
    for key, value in given.items():
        _check_type(method, key, value, defaults[key])
        if key in ranges and value not in ranges[key]:
            raise ValueError(f"{method}: {key} must lie in {ranges[key]}, got {value!r}")
        resolved[key] = value
    return resolved


def _check_type(method: str, key: str, value: object, default: object) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        expected = "a bool"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an int"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a finite number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        expected = "a string"
    else:
        return
    if not ok:
        raise ValueError(f"{method}: {key} must be {expected}, got {value!r}")
