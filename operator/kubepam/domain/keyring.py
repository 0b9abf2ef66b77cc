"""Which kubepam signing keys to sign with, publish and drop, given when each was made and retired.

A key signs from its creation until the next key is made; it stays published in the JWKS until every
token it signed has expired (retirement + longest token TTL + clock leeway), then it is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    created: datetime
    retired: datetime | None = None


def active_key(keys: Sequence[KeyRecord]) -> KeyRecord | None:
    live = [k for k in keys if k.retired is None]
    return max(live, key=lambda k: k.created) if live else None


def rotation_due(keys: Sequence[KeyRecord], now: datetime, period: timedelta) -> bool:
    current = active_key(keys)
    return current is None or now - current.created >= period


def retire_all(keys: Sequence[KeyRecord], now: datetime) -> list[KeyRecord]:
    return [k if k.retired is not None else replace(k, retired=now) for k in keys]


def published(
    keys: Sequence[KeyRecord],
    now: datetime,
    max_token_ttl: timedelta,
    leeway: timedelta = timedelta(minutes=5),
) -> list[KeyRecord]:
    """Keys that may still have valid tokens out there (the active one included)."""
    return [k for k in keys if k.retired is None or now < k.retired + max_token_ttl + leeway]


def next_deadline(
    keys: Sequence[KeyRecord],
    period: timedelta,
    max_token_ttl: timedelta,
    leeway: timedelta = timedelta(minutes=5),
) -> datetime | None:
    """The next moment the keyring changes by itself: a rotation or a key leaving the JWKS."""
    moments = [k.retired + max_token_ttl + leeway for k in keys if k.retired is not None]
    current = active_key(keys)
    if current is not None:
        moments.append(current.created + period)
    return min(moments) if moments else None
