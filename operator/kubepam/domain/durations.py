"""Go-style durations ("90s", "15m", "1h30m", "500ms") as used in every kubepam spec.

The CRDs use the same syntax so that CEL's ``duration()`` can bound them inside the API server.
"""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION = timedelta(hours=87600)  # ten years: more than any kubepam field allows (the CRDs bound each)
MAX_DURATION_TEXT = 32  # as the CRDs' maxLength


def _shown(text: str) -> str:
    return repr(text) if len(text) <= MAX_DURATION_TEXT else repr(text[:MAX_DURATION_TEXT]) + "..."


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration; raises ValueError naming the bad text (never OverflowError): anything
    that is not a string, not a duration, longer than 32 characters or above 87600h (ten years)."""
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string like 90s, 15m or 1h30m, not {type(text).__name__}")
    if len(text) > MAX_DURATION_TEXT:
        raise ValueError(f"{_shown(text)} is longer than {MAX_DURATION_TEXT} characters")
    if not _WHOLE.match(text):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m or 1h30m")
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(text))
    if not seconds <= MAX_DURATION.total_seconds():  # also refuses inf and nan
        raise ValueError(f"{text!r} is longer than the longest duration kubepam accepts (87600h)")
    return timedelta(seconds=seconds)


def duration_field(raw: object, default: str, path: str, problems: list[str]) -> timedelta:
    """A spec field's duration (``default`` when absent); a bad value is reported under ``path``."""
    try:
        return parse_duration(raw if isinstance(raw, str) else default)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return parse_duration(default)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta the way people write durations: 1h30m, 3m, 45s."""
    total = int(delta.total_seconds())
    if total <= 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts)
