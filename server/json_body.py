"""JSON request bodies parsed with explicit limits, so that no body reaches a 5xx.

``json.loads`` alone fails in three ways that are not ``JSONDecodeError``: an integer literal of more
than 4,300 digits raises ``ValueError`` (CPython's int-string limit), nesting deeper than the
interpreter's recursion limit raises ``RecursionError``, and ``1e400`` silently becomes ``inf``.
Here nesting is measured before parsing, and numbers that are too long, out of double range or
``NaN``/``Infinity`` are parsed into markers and reported with the path of the field that holds them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Deeper than any valid request (body -> reward_guidance -> window is 3) by a wide margin.
MAX_DEPTH = 32
#: Far more than any valid integer field (a seed is at most 19 digits).
MAX_INT_DIGITS = 100

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


class JSONBodyError(ValueError):
    """A body that is not acceptable JSON; ``param`` is the dotted path of the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class _Rejected:
    """A number literal the parser refused, kept until its field's path is known."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_int(text: str) -> int | _Rejected:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Rejected(f"integer literal of {digits} digits exceeds the limit of {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float | _Rejected:
    value = float(text)
    return value if math.isfinite(value) else _Rejected(f"number {text} is out of range (not a finite double)")


def _parse_constant(name: str) -> _Rejected:
    return _Rejected(f"{name} is not a finite number")


def _depth(text: str) -> int:
    """The deepest bracket nesting outside string literals."""
    depth = peak = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > peak:
            peak = depth
            if peak > MAX_DEPTH:
                break
    return peak


def _first_rejected(value: Any, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], _Rejected] | None:
    if isinstance(value, _Rejected):
        return path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found = _first_rejected(child, (*path, str(key)))
        if found is not None:
            return found
    return None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a dict, or :class:`JSONBodyError` naming the field and the limit."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONBodyError(f"body is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise JSONBodyError(f"body nesting exceeds the limit of {MAX_DEPTH} levels")
    try:
        body = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise JSONBodyError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise JSONBodyError("body must be a JSON object")
    found = _first_rejected(body)
    if found is not None:
        path, rejected = found
        param = ".".join(path)
        raise JSONBodyError(f"{param}: {rejected.reason}", param=param)
    return body
