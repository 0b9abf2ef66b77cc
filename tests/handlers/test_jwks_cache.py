"""Issuer keys: cached, refetched once on an unknown kid (single flight, rate limited), served stale
while the issuer is down up to a bound."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from kubepam.adapters.jwks import JwksFetchError, KeySet
from kubepam.domain.oauth import OAuthError
from tests.handlers.fakes import Clock, FakeFetcher, jwks_cache
from tests.tokens import Issuer

URL = "https://issuer.test/jwks"


def setup() -> tuple[Clock, Issuer, FakeFetcher]:
    issuer = Issuer("https://issuer.test")
    return Clock(), issuer, FakeFetcher(issuer.jwks())


async def test_keys_are_fetched_once_and_cached() -> None:
    clock, issuer, fetcher = setup()
    cache = jwks_cache(fetcher, clock)
    for _ in range(5):
        found = await cache.key(URL, issuer.kid)
        assert found.jwk["kid"] == issuer.kid
    assert fetcher.calls == 1
    assert cache.state(URL).key_count == 1 and cache.state(URL).last_refresh == clock.now


async def test_unknown_kid_triggers_one_refetch_for_many_concurrent_requests() -> None:
    clock, issuer, fetcher = setup()
    cache = jwks_cache(fetcher, clock)
    await cache.key(URL, issuer.kid)
    rotated = Issuer(issuer.issuer)
    fetcher.document = {"keys": [issuer.public_jwk(), rotated.public_jwk()]}
    clock.advance(seconds=11)
    found = await asyncio.gather(*(cache.key(URL, rotated.kid) for _ in range(20)))
    assert {f.jwk["kid"] for f in found} == {rotated.kid}
    assert fetcher.calls == 2  # single flight: twenty requests, one refetch


async def test_refetch_on_unknown_kid_is_rate_limited() -> None:
    clock, issuer, fetcher = setup()
    cache = jwks_cache(fetcher, clock)
    await cache.key(URL, issuer.kid)
    for _ in range(3):
        with pytest.raises(OAuthError) as err:
            await cache.key(URL, "made-up")
        assert err.value.outcome == "kid_unknown"
    assert fetcher.calls == 1  # within min_refetch of the first fetch: no refetch at all
    assert "rate-limited" in err.value.description
    clock.advance(seconds=10)
    with pytest.raises(OAuthError, match="after a refetch"):
        await cache.key(URL, "made-up")
    assert fetcher.calls == 2


async def test_cached_keys_keep_working_while_the_issuer_is_down_up_to_the_bound() -> None:
    clock, issuer, fetcher = setup()
    cache = jwks_cache(fetcher, clock, max_stale=timedelta(hours=1))
    await cache.key(URL, issuer.kid)
    fetcher.down = True
    clock.advance(minutes=30)  # past refresh: a background refetch fails, the cached key still serves
    assert (await cache.key(URL, issuer.kid)).jwk["kid"] == issuer.kid
    for _ in range(10):  # let the background refetch run
        await asyncio.sleep(0)
    assert cache.state(URL).last_error.endswith("connection refused")
    clock.advance(minutes=31)  # past max_stale
    with pytest.raises(OAuthError) as err:
        await cache.key(URL, issuer.kid)
    assert (err.value.error, err.value.status) == ("temporarily_unavailable", 503)


async def test_first_fetch_failure_is_unavailable_not_unknown_kid() -> None:
    clock, issuer, fetcher = setup()
    fetcher.down = True
    cache = jwks_cache(fetcher, clock)
    with pytest.raises(OAuthError) as err:
        await cache.key(URL, issuer.kid)
    assert err.value.outcome == "jwks_unavailable" and "connection refused" in err.value.description
    with pytest.raises(OAuthError):
        await cache.key(URL, issuer.kid)
    assert fetcher.calls == 1  # the failing issuer is not hammered


async def test_refresh_reports_failures() -> None:
    clock, _, fetcher = setup()
    fetcher.document = {"nokeys": True}
    cache = jwks_cache(fetcher, clock)
    with pytest.raises(JwksFetchError, match="no keys list"):
        await cache.refresh(URL)


def test_keyset_skips_private_symmetric_and_broken_keys() -> None:
    issuer = Issuer("https://issuer.test")
    keyset = KeySet.from_jwks(
        {
            "keys": [
                issuer.public_jwk(),
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {**issuer.public_jwk(), "kid": "priv", "d": "AAAA"},
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                {**issuer.public_jwk(), "kid": "enc", "use": "enc"},
            ]
        }
    )
    assert keyset.count == 1 and keyset.skipped == 4
    assert keyset.find(None) is not None  # a single key may be used by tokens without kid
