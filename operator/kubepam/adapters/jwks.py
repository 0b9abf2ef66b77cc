"""Issuer signing keys: fetched over HTTP, cached, refetched on an unknown kid (single flight, rate
limited), and served stale for a bounded time while the issuer is unreachable.

A :class:`KeySet` holds ready-to-use verification keys (parsed once, not per token).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import jwt

from kubepam.adapters import metrics
from kubepam.domain import token_rules
from kubepam.domain.oauth import OAuthError, temporarily_unavailable

MAX_JWKS_BYTES = 1 << 20


class JwksFetchError(Exception):
    """The issuer's keys could not be fetched; the message is safe to show."""


@dataclass(frozen=True)
class VerificationKey:
    jwk: Mapping[str, Any]
    key: Any  # a cryptography public key


@dataclass(frozen=True)
class KeySet:
    by_kid: Mapping[str, VerificationKey]
    without_kid: tuple[VerificationKey, ...]
    skipped: int = 0

    @property
    def count(self) -> int:
        return len(self.by_kid) + len(self.without_kid)

    @classmethod
    def from_jwks(cls, document: Any) -> KeySet:
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise JwksFetchError("JWKS document has no keys list")
        by_kid: dict[str, VerificationKey] = {}
        without: list[VerificationKey] = []
        skipped = 0
        for raw in document["keys"]:
            if not isinstance(raw, Mapping) or raw.get("kty") not in ("RSA", "EC", "OKP") or "d" in raw:
                skipped += 1  # symmetric, private or unknown keys are never used
                continue
            if raw.get("use") not in (None, "sig"):
                skipped += 1
                continue
            try:
                key = jwt.PyJWK(dict(raw)).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
                skipped += 1
                continue
            entry = VerificationKey(dict(raw), key)
            if isinstance(raw.get("kid"), str):
                by_kid[raw["kid"]] = entry
            else:
                without.append(entry)
        return cls(by_kid, tuple(without), skipped)

    def find(self, kid: str | None) -> VerificationKey | None:
        if kid is not None:
            return self.by_kid.get(kid)
        if self.count == 1:
            return next(iter(self.by_kid.values()), None) or self.without_kid[0]
        return None


@dataclass(frozen=True)
class JwksState:
    """What the status of a connection shows about its keys."""

    key_count: int
    last_refresh: datetime | None
    last_error: str


@dataclass
class _Entry:
    keyset: KeySet | None = None
    fetched_at: datetime | None = None
    attempted_at: datetime | None = None
    last_error: str = ""
    inflight: asyncio.Future[KeySet] | None = field(default=None, repr=False)
    background: asyncio.Task[Any] | None = field(default=None, repr=False)


Fetcher = Callable[[str], Awaitable[Any]]


class HttpFetcher:
    """GET a JWKS document with a timeout and a size limit."""

    def __init__(self, timeout: timedelta) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout.total_seconds())
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise JwksFetchError(f"GET {url}: HTTP {resp.status}")
                body = await resp.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksFetchError(f"GET {url}: {type(exc).__name__} {exc}".strip()) from None
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError(f"GET {url}: JWKS larger than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise JwksFetchError(f"GET {url}: not JSON") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class JwksCache:
    def __init__(
        self,
        fetch: Fetcher,
        clock: Callable[[], datetime],
        *,
        refresh: timedelta,
        min_refetch: timedelta,
        max_stale: timedelta,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._refresh = refresh
        self._min_refetch = min_refetch
        self._max_stale = max_stale
        self._entries: dict[str, _Entry] = {}
        self.fetch_count = 0

    def state(self, url: str) -> JwksState:
        entry = self._entries.get(url)
        if entry is None:
            return JwksState(0, None, "")
        return JwksState(entry.keyset.count if entry.keyset else 0, entry.fetched_at, entry.last_error)

    async def refresh(self, url: str) -> KeySet:
        """Fetch now, joining a fetch already in flight (single flight); raises JwksFetchError."""
        entry = self._entries.setdefault(url, _Entry())
        if entry.inflight is None:
            entry.inflight = asyncio.ensure_future(self._fetch_into(url, entry))
        return await asyncio.shield(entry.inflight)

    async def _fetch_into(self, url: str, entry: _Entry) -> KeySet:
        entry.attempted_at = self._clock()
        self.fetch_count += 1
        try:
            keyset = KeySet.from_jwks(await self._fetch(url))
        except JwksFetchError as exc:
            entry.last_error = str(exc)
            metrics.record_jwks_fetch(ok=False)
            raise
        except Exception as exc:  # any fetch failure is reported as such, never raised raw
            entry.last_error = f"{type(exc).__name__}: {exc}"
            metrics.record_jwks_fetch(ok=False)
            raise JwksFetchError(entry.last_error) from None
        finally:
            entry.inflight = None
        entry.keyset, entry.fetched_at, entry.last_error = keyset, self._clock(), ""
        metrics.record_jwks_fetch(ok=True)
        return keyset

    def cache_states(self) -> dict[str, int]:
        """How many cached issuers are fresh, stale (due for a refresh), expired (older than the maximum
        staleness: refused) or unavailable (never fetched successfully): the /metrics gauge."""
        now = self._clock()
        counts = dict.fromkeys(("fresh", "stale", "expired", "unavailable"), 0)
        for entry in list(self._entries.values()):
            if entry.keyset is None or entry.fetched_at is None:
                state = "unavailable" if entry.attempted_at is not None else ""
            else:
                age = now - entry.fetched_at
                state = "fresh" if age < self._refresh else "stale" if age <= self._max_stale else "expired"
            if state:
                counts[state] += 1
        return counts

    def _may_refetch(self, entry: _Entry, now: datetime) -> bool:
        return entry.attempted_at is None or now - entry.attempted_at >= self._min_refetch

    def _refresh_in_background(self, url: str, entry: _Entry) -> None:
        if entry.background is None or entry.background.done():

            async def run() -> None:
                with contextlib.suppress(JwksFetchError):
                    await self.refresh(url)

            entry.background = asyncio.create_task(run())

    async def key(self, url: str, kid: str | None) -> VerificationKey:
        """The key for ``kid``; raises OAuthError (unknown kid, or issuer keys unavailable)."""
        now = self._clock()
        entry = self._entries.setdefault(url, _Entry())
        if entry.keyset is not None and entry.fetched_at is not None:
            age = now - entry.fetched_at
            hit = entry.keyset.find(kid)
            if hit is not None:
                if age >= self._refresh and self._may_refetch(entry, now):
                    self._refresh_in_background(url, entry)
                if age <= self._max_stale:
                    return hit
                raise temporarily_unavailable(
                    f"issuer keys are older than {self._max_stale} and cannot be refreshed: "
                    f"{entry.last_error}",
                    "jwks_unavailable",
                )
            if not self._may_refetch(entry, now):
                raise _rate_limited(kid)
        elif entry.attempted_at is not None and not self._may_refetch(entry, now):
            raise temporarily_unavailable(f"issuer keys unavailable: {entry.last_error}", "jwks_unavailable")
        try:
            keyset = await self.refresh(url)
        except JwksFetchError as exc:
            if entry.keyset is None:
                raise temporarily_unavailable(f"issuer keys unavailable: {exc}", "jwks_unavailable") from None
            raise token_rules.unknown_kid(kid) from None
        hit = keyset.find(kid)
        if hit is None:
            raise token_rules.unknown_kid(kid)
        return hit

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.background is not None:
                entry.background.cancel()


def _rate_limited(kid: str | None) -> OAuthError:
    err = token_rules.unknown_kid(kid)
    return OAuthError(
        err.error,
        err.description.replace("(after a refetch)", "(refetch rate-limited)"),
        err.status,
        err.outcome,
    )
