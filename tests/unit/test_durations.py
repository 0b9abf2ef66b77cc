"""Go-style durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kubepam.domain.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("1.5h", 5400),
        ("2h0m0s", 7200),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "15", "m", "1d", "-5m", "15 m", "1h-30m"])
def test_refuse(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_format_round_trips() -> None:
    for text in ("3m", "1h30m", "45s", "12h"):
        assert format_duration(parse_duration(text)) == text
