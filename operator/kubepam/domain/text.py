"""Showing what a caller sent, safely: every value echoed in an error or a trace is cut to a short bound."""

from __future__ import annotations

from typing import Any

ECHO_LIMIT = 64


def clip(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``value`` as text, at most ``limit`` characters (the last three ``...`` when it was cut)."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a string cut to ``limit`` characters first (then quoted), for messages that name input."""
    text = value if isinstance(value, str) else str(value)
    return repr(text) if len(text) <= limit else repr(text[: limit - 3]) + "..."
