"""Strict JSON for caller input: UTF-8 only, no lone surrogates, finite numbers, nesting bounded before
parsing (so depth never reaches the interpreter's recursion limit)."""

from __future__ import annotations

import json
import time

import pytest

from kubepam.domain.strict_json import JsonError, depth_exceeds, has_surrogate, loads


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'"\xed\xa0\x80"', "not valid UTF-8"),  # Python's json.loads(bytes) lets this through
        (b'"\xff"', "not valid UTF-8"),
        (b'"\\ud800"', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),  # member names too
        (b'["a", ["\\udbff"]]', "lone surrogate"),
        (b"NaN", "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b"1e400", "too large"),
        (b"[" * 33 + b"]" * 33, "nested deeper than 32 levels"),
        (b"[" * 100_000, "nested deeper than 32 levels"),
        (b"{", "not valid JSON"),
        (b"1" * 5000, "not valid JSON"),  # more digits than Python converts
    ],
)
def test_refusals_name_the_rule(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonError) as err:
        loads(raw)
    assert reason in str(err.value) and len(str(err.value)) < 100


def test_str_input_is_checked_for_surrogates_too() -> None:
    with pytest.raises(JsonError, match="lone surrogate"):
        loads('"\ud800"')


@pytest.mark.parametrize(
    "raw",
    [
        b'"\\ud83d\\ude00"',  # a surrogate pair is one character
        b'"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',  # brackets inside strings do not nest
        b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
        b"[" * 32 + b"]" * 32,
        b'{"n": 1.5, "big": 123456789012345678901234567890}',
    ],
)
def test_ordinary_json_is_accepted_as_json_reads_it(raw: bytes) -> None:
    assert loads(raw) == json.loads(raw)


def test_depth_is_found_in_linear_time() -> None:
    hostile = "[" * 60_000 + '"' + "]" * 10 + '"' + "]" * 60_000
    start = time.perf_counter()
    assert depth_exceeds(hostile, 32)
    assert not depth_exceeds('["' + "[" * 60_000 + '"]', 32)
    assert time.perf_counter() - start < 0.5


def test_has_surrogate_walks_iteratively() -> None:
    deep: object = "\udc00"
    for _ in range(5000):
        deep = [deep]
    assert has_surrogate(deep) and not has_surrogate({"a": ["b", {"c": "\U0001f600"}]})
