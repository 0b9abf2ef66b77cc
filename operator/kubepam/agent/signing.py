"""The signed request of docs/agent-protocol.md section 2: `Authorization: KubepamAgent <JWT>`, an
EdDSA JWT signed with the agent's key, the client certificate in its `x5c` header, and claims binding
it to one method and path (`htm`, `htu`), a short life (`iat`, `exp`) and a one-time `jti`."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

SCHEME = "KubepamAgent"
LIFETIME = 60  # seconds; the broker accepts at most 60


def x5c(certificate_pem: str) -> str:
    """The first certificate of a PEM as the base64 DER `x5c` entry (RFC 7515 4.1.6)."""
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def signed_token(
    key: Ed25519PrivateKey,
    certificate_pem: str,
    method: str,
    path_with_query: str,
    now: datetime,
    lifetime: int = LIFETIME,
) -> str:
    iat = int(now.timestamp())
    claims = {
        "htm": method.upper(),
        "htu": path_with_query,
        "iat": iat,
        "exp": iat + min(lifetime, LIFETIME),
        "jti": secrets.token_hex(16),
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"x5c": [x5c(certificate_pem)]})


def authorization(
    key: Ed25519PrivateKey, certificate_pem: str, method: str, path_with_query: str, now: datetime
) -> str:
    return f"{SCHEME} {signed_token(key, certificate_pem, method, path_with_query, now)}"
