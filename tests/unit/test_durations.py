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


@pytest.mark.parametrize(
    "text",
    ["999999999999999h", "9" * 30 + "h", "87601h", "10000000000000000000000000000s"],
)
def test_out_of_range_is_a_value_error_never_an_overflow(text: str) -> None:
    with pytest.raises(ValueError, match="longer than") as err:
        parse_duration(text)
    assert not isinstance(err.value, OverflowError)


@pytest.mark.parametrize(
    ("value", "message"), [(5, "not int"), (None, "not NoneType"), ("9" * 400 + "h", "...")]
)
def test_non_strings_and_long_text_are_refused_with_a_short_message(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=r"must be a string|longer than 32 characters") as err:
        parse_duration(value)  # type: ignore[arg-type]
    assert message in str(err.value) and len(str(err.value)) < 120


def test_the_longest_accepted_duration_is_ten_years() -> None:
    assert parse_duration("87600h") == timedelta(hours=87600)
