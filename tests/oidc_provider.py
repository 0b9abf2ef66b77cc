"""A local OpenID Connect provider for tests: discovery, JWKS, an authorization endpoint with a sign-in
form (authorization code flow, PKCE S256 required), and a token endpoint that issues RS256 ID tokens.
It serves HTTPS on 127.0.0.1 with a test CA, in a background thread, so the real kube-apiserver can
trust it (AuthenticationConfiguration) and a browser or HTTP client can sign in through it. Codes are
single-use and bound to client, redirect URI and code challenge, as RFC 6749 and 7636 require."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kubepam.dev.cluster import free_port
from tests.tls import TestCA

CLIENT_ID = "kubepam-console"


def spki_sha256(cert_pem: bytes) -> str:
    """base64 SHA-256 of a certificate's public key, as Chromium's --ignore-certificate-errors-spki-list
    takes it (the test browser trusts exactly this server key, not any certificate)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    username: str


@dataclass
class OidcProvider:
    users: dict[str, list[str]]  # username -> groups
    port: int = field(default_factory=free_port)
    codes: dict[str, Grant] = field(default_factory=dict)
    nonce_override: str | None = None  # tests: mint an ID token with another nonce

    def __post_init__(self) -> None:
        self.ca = TestCA("kubepam test OIDC CA")
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:12]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.spki = ""

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        return self.ca.cert_pem.decode()

    # -- endpoints --------------------------------------------------------------------------------

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return web.json_response({"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query if request.method == "GET" else await request.post()
        required = ("response_type", "client_id", "redirect_uri", "state", "nonce", "code_challenge")
        if any(not q.get(k) for k in required) or q.get("code_challenge_method") != "S256":
            return web.Response(status=400, text="invalid_request: code flow with PKCE S256 only")
        if q["response_type"] != "code" or q["client_id"] != CLIENT_ID:
            return web.Response(status=400, text="unauthorized_client")
        if request.method == "GET":
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(str(v))}">'
                for k, v in q.items()
            )
            return web.Response(
                content_type="text/html",
                text=f"<!doctype html><title>Local IdP</title><h1>Local identity provider</h1>"
                f'<form method="post" action="/authorize">{hidden}'
                f'<label>User <input name="username" id="idp-username"></label>'
                f'<button id="idp-sign-in">Sign in</button></form>',
            )
        username = str(q.get("username", ""))
        if username not in self.users:
            return web.Response(status=403, text="unknown user")
        code = secrets.token_urlsafe(24)
        self.codes[code] = Grant(
            str(q["client_id"]), str(q["redirect_uri"]), str(q["code_challenge"]), str(q["nonce"]), username
        )
        raise web.HTTPSeeOther(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = self.codes.pop(str(form.get("code", "")), None)  # single use, even when refused
        if grant is None:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "unknown or used code"}, status=400
            )
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (
            form.get("grant_type") != "authorization_code"
            or form.get("client_id") != grant.client_id
            or form.get("redirect_uri") != grant.redirect_uri
            or challenge != grant.challenge
        ):
            return web.json_response(
                {"error": "invalid_grant", "error_description": "PKCE or redirect mismatch"}, status=400
            )
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": grant.client_id,
            "sub": f"user-{grant.username}",
            "preferred_username": grant.username,
            "groups": self.users[grant.username],
            "nonce": self.nonce_override or grant.nonce,
            "iat": now,
            "exp": now + 600,
        }
        id_token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        return web.json_response(
            {
                "id_token": id_token,
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 600,
            }
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        pair = self.ca.server()
        self.spki = spki_sha256(pair.cert_pem)
        tmp = Path(tempfile.mkdtemp(prefix="kubepam-idp-"))
        (tmp / "tls.crt").write_bytes(pair.cert_pem)
        (tmp / "tls.key").write_bytes(pair.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
        app = web.Application()
        app.add_routes(
            [
                web.get("/.well-known/openid-configuration", self.discovery),
                web.get("/jwks", self.jwks),
                web.get("/authorize", self.authorize),
                web.post("/authorize", self.authorize),
                web.post("/token", self.token),
            ]
        )
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()
            started.set()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="local-oidc-provider", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the local OIDC provider did not start")

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def trust(self) -> dict[str, Any]:
        """What the control plane needs to trust this issuer."""
        return {"issuer": self.issuer, "ca_pem": self.ca_pem, "audience": CLIENT_ID}
