"""Signing-key lifecycle decisions: rotate when due, publish retired keys until their tokens expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubepam.domain.keyring import KeyRecord, active_key, next_deadline, published, retire_all, rotation_due

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(hours=12)
LEEWAY = timedelta(minutes=5)


def test_rotation_due_after_period() -> None:
    keys = [KeyRecord("a", T0)]
    assert not rotation_due(keys, T0 + timedelta(days=6), timedelta(days=7))
    assert rotation_due(keys, T0 + timedelta(days=7), timedelta(days=7))
    assert rotation_due([], T0, timedelta(days=7))


def test_retired_key_published_until_its_last_token_expires() -> None:
    keys = [*retire_all([KeyRecord("a", T0)], T0 + timedelta(days=1)), KeyRecord("b", T0 + timedelta(days=1))]
    assert active_key(keys) == keys[1]
    retired = keys[0].retired
    assert retired is not None
    assert [k.kid for k in published(keys, retired + TTL + LEEWAY - timedelta(seconds=1), TTL)] == ["a", "b"]
    assert [k.kid for k in published(keys, retired + TTL + LEEWAY, TTL)] == ["b"]


def test_next_deadline_is_the_earliest_change() -> None:
    keys = [KeyRecord("a", T0, retired=T0 + timedelta(hours=1)), KeyRecord("b", T0 + timedelta(hours=1))]
    assert next_deadline(keys, timedelta(days=7), TTL) == T0 + timedelta(hours=13, minutes=5)
