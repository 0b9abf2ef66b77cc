"""The console's HTTP defences with aiohttp's test client and a stand-in API server (a fake `Kube`):
security headers on every answer, cookie flags, CSRF refusal, sessions that expire or are forged, the
sign-in rate limit, and no token in any page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepam.console.app import make_app
from kubepam.console.kube import KubeError, Person
from kubepam.console.security import RateLimit
from kubepam.console.sessions import Sealer

TOKEN = "alice-secret-token-0123456789"


class FakeKube:
    """Knows one token (alice's); everything else is 401. Records writes."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, str, dict[str, Any]]] = []

    async def close(self) -> None:
        return None

    async def whoami(self, token: str) -> Person:
        if token != TOKEN:
            raise KubeError(401, "Unauthorized")
        return Person("alice", frozenset({"kubepam:users"}))

    async def can(self, token: str, verb: str, resource: str, **kw: Any) -> bool:
        return False

    async def list_or_empty(self, token: str, plural: str, namespace: str = "") -> list[dict[str, Any]]:
        if token != TOKEN:
            raise KubeError(401, "Unauthorized")
        return []

    async def patch(
        self, token: str, plural: str, ns: str, name: str, patch: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.patches.append((plural, ns, name, patch))
        return {}


async def client(
    tls: bool = False, ttl: timedelta = timedelta(hours=1), limiter: RateLimit | None = None
) -> tuple[TestClient[Any, Any], FakeKube]:
    kube = FakeKube()
    app = make_app(
        kube,  # type: ignore[arg-type]
        session_key=b"k" * 32,
        session_ttl=ttl,
        broker="http://127.0.0.1:1",
        tls=tls,
        secure_cookies=False,
        limiter=limiter,
    )
    c: TestClient[Any, Any] = TestClient(TestServer(app))
    await c.start_server()
    return c, kube


async def sign_in(c: TestClient[Any, Any], token: str = TOKEN) -> Any:
    page = await (await c.get("/login")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return await c.post("/login", data={"csrf": csrf, "token": token}, allow_redirects=False)


@pytest.mark.parametrize("tls", [False, True])
async def test_every_answer_carries_the_security_headers(tls: bool) -> None:
    c, _ = await client(tls=tls)
    try:
        for path in ("/login", "/access", "/static/console.css"):
            resp = await c.get(path, allow_redirects=False)
            csp = resp.headers["Content-Security-Policy"]
            assert (
                "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            )
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert ("Strict-Transport-Security" in resp.headers) is tls
            if not path.startswith("/static"):
                assert resp.headers["Cache-Control"] == "no-store"
    finally:
        await c.close()


async def test_the_session_cookie_is_httponly_strict_and_sealed() -> None:
    c, _ = await client(tls=True)
    try:
        assert (await c.get("/login")).cookies["kubepam_login"]["secure"], "over TLS every cookie is Secure"
    finally:
        await c.close()
    c, _ = await client()
    try:
        resp = await sign_in(c)
        assert resp.status == 303 and resp.headers["Location"] == "/access"
        cookie = resp.cookies["kubepam_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert TOKEN not in cookie.value and "alice" not in cookie.value
        page = await (await c.get("/access")).text()
        assert TOKEN not in page and ">alice</span>" in page
    finally:
        await c.close()


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing() -> None:
    c, kube = await client()
    try:
        await sign_in(c)
        for data in ({}, {"csrf": "wrong"}, {"csrf": "é"}):
            resp = await c.post("/access/checkouts/team-a/x/checkin", data=data)
            assert resp.status == 403 and "CSRF" in await resp.text()
        assert kube.patches == []
        page = await (await c.get("/access")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        resp = await c.post("/access/checkouts/team-a/x/checkin", data={"csrf": csrf}, allow_redirects=False)
        assert resp.status == 303
        assert kube.patches == [("checkouts", "team-a", "x", {"spec": {"checkin": {"requested": True}}})]
    finally:
        await c.close()


async def test_the_sign_in_form_needs_its_own_csrf_token() -> None:
    c, _ = await client()
    try:
        for csrf in ("x", "é"):
            resp = await c.post("/login", data={"csrf": csrf, "token": TOKEN}, allow_redirects=False)
            assert resp.status == 403
    finally:
        await c.close()


async def test_failed_sign_ins_are_rate_limited_and_good_ones_are_not() -> None:
    c, _ = await client(limiter=RateLimit(burst=3, per_minute=1))
    try:
        for _ in range(3):
            assert (await sign_in(c, "wrong")).headers["Location"] == "/login?error=1"
        assert (await sign_in(c, "wrong")).status == 429
        assert (await sign_in(c)).status == 429  # the address is blocked, whatever it sends
    finally:
        await c.close()
    c, _ = await client(limiter=RateLimit(burst=2, per_minute=1))
    try:
        for _ in range(5):
            assert (await sign_in(c)).status == 303
    finally:
        await c.close()


async def test_an_expired_or_foreign_session_is_no_session() -> None:
    now = datetime.now(UTC)
    other = Sealer(b"another key of at least 32 bytes!!", timedelta(hours=1)).new_session(TOKEN, "alice", ())
    c, _ = await client()
    try:
        c.session.cookie_jar.update_cookies({"kubepam_session": other})
        resp = await c.get("/access", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    finally:
        await c.close()
    sealer = Sealer(b"k" * 32, timedelta(seconds=1))
    sealed = sealer.new_session(TOKEN, "alice", ())
    assert sealer.session(sealed) is not None
    assert sealer.open(sealed, ttl=timedelta(seconds=-1)) is None, "past its TTL, the cookie opens to nothing"
    assert now < datetime.now(UTC) + timedelta(seconds=1)


async def test_a_revoked_token_ends_the_session() -> None:
    c, kube = await client()
    try:
        await sign_in(c)

        async def revoked(*a: Any, **kw: Any) -> list[dict[str, Any]]:
            raise KubeError(401, "Unauthorized")

        kube.list_or_empty = revoked  # type: ignore[method-assign]
        resp = await c.get("/history", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    finally:
        await c.close()
