"""Strict, bounded JSON for everything a caller sends (token headers and payloads, broker bodies).

Python's own decoder is lenient where kubepam must not be: ``json.loads`` of bytes decodes UTF-8 with
``surrogatepass`` (so the bytes ED A0 80, an encoded lone surrogate, come through), ``\\ud800`` escapes
produce lone surrogates too, ``NaN`` and ``Infinity`` are accepted, and deep nesting ends in
RecursionError. Here: strict UTF-8, no surrogate code point in any string, no non-finite number, and
the nesting depth is checked before parsing (a scan that counts brackets outside strings), so a
60,000-level body is refused in linear time with the reason. Every refusal is a :class:`JsonError`
(a ValueError) whose message says what was wrong, never what was sent.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32

_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonError(ValueError):
    """Input that is not strict JSON within kubepam's bounds; the message names the rule it broke."""


def depth_exceeds(text: str, max_depth: int) -> bool:
    """True when arrays/objects nest deeper than ``max_depth`` (brackets inside strings do not count).
    Counting brackets first keeps the common case (few of them) to two C-speed passes."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = match.group()
        if char == "[" or char == "{":
            depth += 1
            if depth > max_depth:
                return True
        elif char == "]" or char == "}":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonError("a number is too large to represent")
    return value


def has_surrogate(value: Any) -> bool:
    """True when any string (member names included) holds a lone surrogate code point."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` strictly; raises JsonError with the reason."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8", "strict")
        except UnicodeDecodeError:
            raise JsonError("not valid UTF-8") from None
    else:
        text = raw
        if _SURROGATE.search(text):
            raise JsonError("not valid Unicode (a lone surrogate)")
    if depth_exceeds(text, max_depth):
        raise JsonError(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except JsonError:
        raise
    except (ValueError, RecursionError) as exc:
        # json's messages give a position, never the input itself.
        raise JsonError(f"not valid JSON ({str(exc).split(':')[0]})") from None
    if _SURROGATE_ESCAPE.search(text) and has_surrogate(value):
        raise JsonError("a string holds a lone surrogate (\\ud800-\\udfff), which is not Unicode text")
    return value
