"""kubepam's signing keys in their Secret: created once, rotated when due with the old key still
published until its tokens expire, and safe when two replicas write at once."""

from __future__ import annotations

from datetime import timedelta

import jwt

from kubepam.adapters.signing import SigningKeys
from tests.handlers.fakes import Clock, FakeSecrets

PERIOD = timedelta(days=7)
TTL = timedelta(hours=12)


def keys(store: FakeSecrets) -> SigningKeys:
    return SigningKeys(
        store, "kubepam-system", "kubepam-signing-keys", rotation_period=PERIOD, max_token_ttl=TTL
    )


async def test_first_sync_creates_one_key_and_later_syncs_only_read() -> None:
    store, clock = FakeSecrets(), Clock()
    ring = keys(store)
    assert await ring.sync(clock()) is True
    assert await ring.sync(clock()) is False
    other_replica = keys(store)
    await other_replica.sync(clock())
    assert other_replica.active.record.kid == ring.active.record.kid
    assert store.writes == 1


async def test_rotation_keeps_the_old_key_published_until_its_tokens_expire() -> None:
    store, clock = FakeSecrets(), Clock()
    ring = keys(store)
    await ring.sync(clock())
    old_kid = ring.active.record.kid
    token = ring.sign({"sub": "x", "exp": int(clock().timestamp()) + 600})
    clock.advance(days=7)
    assert await ring.sync(clock()) is True  # rotation due
    assert ring.active.record.kid != old_kid
    published = {k["kid"] for k in ring.jwks()["keys"]}
    assert published == {old_kid, ring.active.record.kid}
    old_key = ring.verification_key(old_kid)
    assert jwt.decode(token, old_key, algorithms=["EdDSA"], options={"verify_exp": False})["sub"] == "x"
    clock.advance(hours=12, minutes=5)
    await ring.sync(clock())
    assert {k["kid"] for k in ring.jwks()["keys"]} == {ring.active.record.kid}


async def test_forced_rotation_and_a_write_conflict_between_replicas() -> None:
    store, clock = FakeSecrets(), Clock()
    ring = keys(store)
    await ring.sync(clock())
    store.conflict_next_write = True  # another replica wrote in between: re-read and decide again
    new_kid = await ring.rotate(clock())
    assert ring.active.record.kid == new_kid
    assert len(ring.jwks()["keys"]) == 2


async def test_private_keys_never_appear_in_the_jwks() -> None:
    store, clock = FakeSecrets(), Clock()
    ring = keys(store)
    await ring.sync(clock())
    for key in ring.jwks()["keys"]:
        assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
