"""OIDC sign-in for the console: the authorization code flow with PKCE (S256) against the issuer the
cluster trusts, so people sign in with their identity provider instead of pasting a token.

The console is an OIDC client only to obtain the person's ID token, which then is the bearer token for
every API call, as for kubectl with an OIDC plugin; it gains no authority. `state` (bound to the browser
by a sealed cookie), `nonce` and the PKCE verifier never leave the console unsealed; the ID token is
verified here (issuer, audience, expiry, signature from the issuer's JWKS, nonce) before the API server,
which verifies it again, is asked who it belongs to. The issuer is reached only over verified HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class OidcError(Exception):
    """Why a sign-in failed, safe to show (never a code, token or verifier)."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    redirect_url: str  # this console's /login/callback as the browser reaches it
    client_secret: str = ""  # empty: a public client, PKCE alone
    ca_file: str = ""  # the CA of the issuer's certificate (empty: the system's)
    scopes: str = "openid profile email groups"


@dataclass(frozen=True)
class Pending:
    """What a sign-in in progress must remember (sealed in a cookie for the round trip)."""

    state: str
    nonce: str
    verifier: str

    def as_dict(self) -> dict[str, str]:
        return {"s": self.state, "n": self.nonce, "v": self.verifier}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pending | None:
        try:
            return cls(str(data["s"]), str(data["n"]), str(data["v"]))
        except (KeyError, TypeError):
            return None


def challenge_of(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class OidcClient:
    def __init__(self, config: OidcConfig, timeout: float = 10) -> None:
        if not config.issuer.startswith("https://"):
            raise ValueError(f"the OIDC issuer must be https://, got {config.issuer!r}")
        self.config = config
        self._ssl = ssl.create_default_context(cafile=config.ca_file or None)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, Any] = {}

    async def _get_json(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        if not url.startswith("https://"):
            raise OidcError(f"the identity provider named a non-HTTPS endpoint: {url}")
        async with http.get(url, ssl=self._ssl) as resp:
            if resp.status != 200:
                raise OidcError(f"the identity provider answered HTTP {resp.status} at {url}")
            data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise OidcError(f"the identity provider's answer at {url} is not a JSON object")
        return data

    async def discovery(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        if self._discovery is None:
            doc = await self._get_json(
                http, self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            if doc.get("issuer") != self.config.issuer:
                raise OidcError(
                    f"the discovery document names issuer {doc.get('issuer')!r}, not {self.config.issuer!r}"
                )
            self._discovery = doc
        return self._discovery

    async def begin(self) -> tuple[str, Pending]:
        """Where to send the browser, and what to remember until it comes back."""
        pending = Pending(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48))
        async with aiohttp.ClientSession(timeout=self._timeout) as http:
            doc = await self.discovery(http)
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_url,
            "scope": self.config.scopes,
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": challenge_of(pending.verifier),
            "code_challenge_method": "S256",
        }
        return f"{doc['authorization_endpoint']}?{urlencode(params)}", pending

    async def finish(self, pending: Pending, state: str, code: str) -> tuple[str, int]:
        """The verified ID token for the code the browser brought back, and its expiry (epoch s)."""
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise OidcError("the sign-in's state does not match this browser's: start again")
        if not code:
            raise OidcError("the identity provider sent no code")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_url,
            "client_id": self.config.client_id,
            "code_verifier": pending.verifier,
        }
        if self.config.client_secret:
            form["client_secret"] = self.config.client_secret
        async with aiohttp.ClientSession(timeout=self._timeout) as http:
            doc = await self.discovery(http)
            endpoint = str(doc.get("token_endpoint", ""))
            if not endpoint.startswith("https://"):
                raise OidcError("the identity provider names no HTTPS token endpoint")
            async with http.post(endpoint, data=form, ssl=self._ssl) as resp:
                answer = await resp.json(content_type=None)
            if resp.status != 200 or not isinstance(answer, dict) or not answer.get("id_token"):
                error = (
                    answer.get("error", f"HTTP {resp.status}")
                    if isinstance(answer, dict)
                    else f"HTTP {resp.status}"
                )
                raise OidcError(f"the identity provider refused the code: {error}")
            id_token = str(answer["id_token"])
            claims = await self._verify(http, doc, id_token)
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), pending.nonce.encode()):
            raise OidcError("the ID token's nonce does not match this sign-in")
        return id_token, int(claims["exp"])

    async def _verify(
        self, http: aiohttp.ClientSession, doc: dict[str, Any], id_token: str
    ) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(id_token).get("kid", "")
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token is malformed: {exc}") from None
        key = self._keys.get(kid)
        if key is None:  # unknown key: fetch the set once more (the issuer may have rotated)
            jwks = jwt.PyJWKSet.from_dict(await self._get_json(http, str(doc.get("jwks_uri", ""))))
            self._keys = {k.key_id or "": k for k in jwks.keys}
            key = self._keys.get(kid)
        if key is None:
            raise OidcError("the ID token is signed with a key the issuer does not publish")
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.config.client_id,
                issuer=self.config.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise OidcError(f"the ID token was refused: {exc}") from None
        if claims["exp"] <= time.time():
            raise OidcError("the ID token has expired")
        return claims
