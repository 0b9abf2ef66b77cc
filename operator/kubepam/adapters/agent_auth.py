"""The cryptography of the server agent's signed requests (docs/agent-protocol.md, section 2): the
client certificate in the JWT's ``x5c`` header, its chain to a project CA (one signature), its key's
fingerprint, and the JWT's signature with that key (EdDSA with Ed25519, or ES256 with P-256).

Every failure is an :class:`AgentAuthError` with a short reason code and a sentence; neither ever
quotes the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.utils import base64url_decode

MAX_TOKEN = 8192
URI_PREFIX = "kubepam://server/"
ALGORITHMS = {"EdDSA": ed25519.Ed25519PublicKey, "ES256": ec.EllipticCurvePublicKey}


class AgentAuthError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def agent_uri(namespace: str, server: str) -> str:
    return f"{URI_PREFIX}{namespace}/{server}"


def spki_fingerprint(public_key: Any) -> str:
    """SHA-256 (hex) of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class IssuedAgentCertificate:
    pem: str
    fingerprint: str
    serial: int
    not_after: datetime


def describe_certificate(pem: str) -> IssuedAgentCertificate:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return IssuedAgentCertificate(
        pem, spki_fingerprint(cert.public_key()), cert.serial_number, cert.not_valid_after_utc
    )


@dataclass(frozen=True)
class PresentedToken:
    """A token whose header and certificate parsed (nothing verified yet)."""

    token: str
    alg: str
    certificate: x509.Certificate
    namespace: str
    server: str

    @property
    def fingerprint(self) -> str:
        return spki_fingerprint(self.certificate.public_key())

    @property
    def serial(self) -> int:
        return self.certificate.serial_number


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise AgentAuthError("malformed_token", "the agent token is not a compact JWS (three parts)")
    try:
        header = json.loads(base64url_decode(parts[0].encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise AgentAuthError("malformed_token", "the agent token's header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise AgentAuthError("malformed_token", "the agent token's header is not a JSON object")
    return header


def _server_of(cert: x509.Certificate) -> tuple[str, str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise AgentAuthError("not_an_agent_certificate", "the certificate has no URI SAN") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(URI_PREFIX)]
    if len(uris) != 1:
        raise AgentAuthError(
            "not_an_agent_certificate", "the certificate names no kubepam://server/<namespace>/<server>"
        )
    rest = uris[0][len(URI_PREFIX) :].split("/")
    if len(rest) != 2 or not all(rest):
        raise AgentAuthError("not_an_agent_certificate", "the certificate's kubepam server URI is malformed")
    return rest[0], rest[1]


def parse_token(token: str) -> PresentedToken:
    """Header, algorithm and the certificate of ``x5c``; nothing is trusted yet."""
    if len(token) > MAX_TOKEN:
        raise AgentAuthError("malformed_token", f"the agent token is longer than {MAX_TOKEN} characters")
    header = _header(token)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AgentAuthError("bad_alg", "the agent token's alg must be EdDSA or ES256")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
        raise AgentAuthError("bad_x5c", "the header's x5c must hold exactly the agent's certificate")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (ValueError, binascii.Error):
        raise AgentAuthError("bad_x5c", "x5c[0] is not a base64 DER certificate") from None
    if not isinstance(cert.public_key(), ALGORITHMS[alg]):
        raise AgentAuthError("bad_alg", f"alg {alg} does not match the certificate's key type")
    namespace, server = _server_of(cert)
    return PresentedToken(token, str(alg), cert, namespace, server)


def check_chain(
    presented: PresentedToken, cas: Iterable[x509.Certificate], now: datetime
) -> x509.Certificate:
    """The certificate is signed by one of ``cas`` (directly) and valid now; returns that CA."""
    cert = presented.certificate
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        issuer = ca
        break
    else:
        raise AgentAuthError(
            "untrusted_certificate",
            "the certificate is not issued by a current or retiring CA of the project",
        )
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AgentAuthError("certificate_expired", "the agent certificate is not valid at this time")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise AgentAuthError("not_an_agent_certificate", "the certificate is not for client authentication")
    return issuer


def verified_claims(presented: PresentedToken) -> dict[str, Any]:
    """The claims, once the JWT's signature verifies with the certificate's key (times are the caller's)."""
    try:
        claims = jwt.decode(
            presented.token,
            key=presented.certificate.public_key(),  # type: ignore[arg-type]
            algorithms=[presented.alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise AgentAuthError("bad_signature", "the agent token's signature does not verify") from None
    except jwt.PyJWTError:
        raise AgentAuthError("malformed_token", "the agent token could not be decoded") from None
    if not isinstance(claims, dict):
        raise AgentAuthError("malformed_token", "the agent token's claims are not a JSON object")
    return claims
