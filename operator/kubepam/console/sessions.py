"""Console sessions: the person's token, name and CSRF secret sealed in one cookie.

The cookie is Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`): encrypted, so the token cannot
be read from the browser's storage, and signed, so it cannot be forged or altered; Fernet's timestamp
bounds its life server-side whatever the browser keeps. It is HttpOnly, SameSite=Strict, Path=/,
and Secure when served over TLS. The server stores nothing: any replica with the same key reads it.
The key is derived from configured secret material (any length), so replicas share sessions by
sharing that material, and a console without it makes a fresh key at start (sessions end on restart).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "kubepam_session"
LOGIN_COOKIE = "kubepam_login"  # carries the sign-in form's CSRF secret before there is a session
OIDC_COOKIE = "kubepam_oidc"  # an OIDC sign-in in progress: state, nonce, PKCE verifier (10 minutes)


@dataclass(frozen=True)
class Session:
    token: str
    username: str
    groups: tuple[str, ...]
    csrf: str

    def valid_csrf(self, submitted: str) -> bool:
        return bool(submitted) and hmac.compare_digest(self.csrf.encode(), submitted.encode())


def derive_key(material: bytes) -> bytes:
    """A Fernet key from any secret material (a mounted Secret, a random value)."""
    return base64.urlsafe_b64encode(hashlib.sha256(b"kubepam-console-session\x00" + material).digest())


class Sealer:
    def __init__(self, material: bytes | None, ttl: timedelta) -> None:
        self._fernet = Fernet(derive_key(material or secrets.token_bytes(32)))
        self.ttl = ttl

    def seal(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()

    def open(self, cookie: str | None, ttl: timedelta | None = None) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            raw = self._fernet.decrypt(cookie.encode(), ttl=int((ttl or self.ttl).total_seconds()))
            data = json.loads(raw)
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def session(self, cookie: str | None) -> Session | None:
        data = self.open(cookie)
        if data is None:
            return None
        try:
            return Session(str(data["t"]), str(data["u"]), tuple(data["g"]), str(data["c"]))
        except (KeyError, TypeError):
            return None

    def new_session(self, token: str, username: str, groups: tuple[str, ...]) -> str:
        return self.seal({"t": token, "u": username, "g": list(groups), "c": secrets.token_urlsafe(32)})
