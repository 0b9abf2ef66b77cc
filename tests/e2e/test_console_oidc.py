"""OIDC sign-in to the console against a local identity provider the real API server trusts: the
authorization code flow with PKCE, the ID token as the person's bearer token (username oidc:<name>,
groups from the provider), and every way a callback can be wrong refused with its reason and no
session: another browser's state, a replayed code, a wrong nonce, a sign-in not started here, and the
provider's own error."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import aiohttp
import pytest

from tests.e2e.console_world import ConsoleServer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def to_provider(console: ConsoleServer, http: aiohttp.ClientSession) -> dict[str, str]:
    async with http.get(console.url + "/login/oidc", allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        location = resp.headers["Location"]
        assert "kubepam_oidc" in resp.cookies and resp.cookies["kubepam_oidc"]["samesite"] == "Lax"
    assert location.startswith(console.idp.issuer + "/authorize?")
    return {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}


async def callback_url(
    console: ConsoleServer, http: aiohttp.ClientSession, params: dict[str, str], who: str
) -> str:
    context = ssl.create_default_context(cadata=console.idp.ca_pem)
    async with http.post(
        console.idp.issuer + "/authorize", data=params | {"username": who}, ssl=context, allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
        return resp.headers["Location"]


async def whoami(console: ConsoleServer, http: aiohttp.ClientSession) -> str | None:
    async with http.get(console.url + "/access", allow_redirects=False) as resp:
        if resp.status != 200:
            return None
        text = await resp.text()
    return text.split('id="whoami"', 1)[1].split(">", 1)[1].split("<", 1)[0]


async def test_a_person_signs_in_with_the_identity_provider(
    console: ConsoleServer, http: aiohttp.ClientSession
) -> None:
    params = await to_provider(console, http)
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["client_id"] == "kubepam-console" and params["state"] and params["nonce"]
    assert params["redirect_uri"] == console.url + "/login/callback"
    callback = await callback_url(console, http, params, "carol")
    async with http.get(callback, allow_redirects=False) as resp:
        assert resp.status == 200
        page = await resp.text()
        assert 'http-equiv="refresh" content="0;url=/access"' in page
        session = resp.cookies["kubepam_session"]
        assert session["samesite"] == "Strict" and session["httponly"]
        assert int(session["max-age"]) <= 600, "no longer than the ID token lives"
    assert await whoami(console, http) == "oidc:carol"
    async with http.get(console.url + "/approvals") as resp:
        assert 'href="/approvals"' in await resp.text(), "carol is an approver: the provider's groups count"
    # The code was redeemed once: bringing it back again signs nobody in.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        params = await to_provider(console, other)
        replay = urlparse(callback)
        query = parse_qs(replay.query)
        forged = urlunparse(
            replay._replace(query=urlencode({"code": query["code"][0], "state": params["state"]}))
        )
        async with other.get(forged, allow_redirects=False) as resp:
            assert resp.status == 403 and "invalid_grant" in await resp.text()
        assert await whoami(console, other) is None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("another browser's state", "state does not match"),
        ("a wrong nonce", "nonce does not match"),
        ("not started here", "not started in this browser"),
        ("the provider's error", "the identity provider said: access_denied"),
    ],
)
async def test_a_wrong_callback_signs_nobody_in(
    console: ConsoleServer, http: aiohttp.ClientSession, case: str, message: str
) -> None:
    if case == "not started here":
        url = console.url + "/login/callback?code=x&state=y"
    elif case == "the provider's error":
        await to_provider(console, http)
        url = console.url + "/login/callback?error=access_denied"
    else:
        params = await to_provider(console, http)
        if case == "a wrong nonce":
            console.idp.nonce_override = "not-the-nonce-the-console-sent"
        url = await callback_url(console, http, params, "dave")
        if case == "another browser's state":
            parsed = urlparse(url)
            code = parse_qs(parsed.query)["code"][0]
            url = urlunparse(parsed._replace(query=urlencode({"code": code, "state": "someone-elses"})))
    try:
        async with http.get(url, allow_redirects=False) as resp:
            text = await resp.text()
            assert resp.status == 403 and message in text, text[-800:]
            assert "kubepam_session" not in resp.cookies
    finally:
        console.idp.nonce_override = None
    assert await whoami(console, http) is None
