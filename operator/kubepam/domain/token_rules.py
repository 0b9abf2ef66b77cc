"""Rules for the JWTs kubepam accepts from workload issuers, before and around signature checks.

Asymmetric algorithms only, and the algorithm must agree with the key type (an RSA key never
verifies an HS256 or ES256 token); size and shape limits come first so hostile input is refused
cheaply. All refusals are OAuthErrors with their own outcome label.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from kubepam.domain.oauth import OAuthError, invalid_grant, invalid_request

MAX_TOKEN_BYTES = 16 * 1024
LEEWAY_SECONDS = 60

# alg -> (kty, crv or None)
ASYMMETRIC_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
SYMMETRIC_PREFIXES = ("HS",)


def check_shape(token: str) -> None:
    """Size and segment checks that need no parsing."""
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise invalid_request(f"subject_token is larger than {MAX_TOKEN_BYTES} bytes", "oversize")
    parts = token.split(".")
    if len(parts) != 3:
        raise invalid_grant(
            f"subject_token is not a JWS compact serialization (3 segments, got {len(parts)})", "malformed"
        )
    if not parts[0] or not parts[1]:
        raise invalid_grant("subject_token has an empty header or payload segment", "malformed")


def peek_header(token: str) -> Mapping[str, Any]:
    """The JOSE header, only to choose the key and check the algorithm before verification (the library's
    full decode still validates every segment strictly). Cheaper than decoding the whole token twice."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise invalid_grant("token header is not base64url-encoded JSON", "malformed") from None
    if not isinstance(header, dict):
        raise invalid_grant("token header is not a JSON object", "malformed")
    return header


def check_header(header: Mapping[str, Any]) -> tuple[str, str | None]:
    """Returns (alg, kid) or refuses: alg none, symmetric algs and unknown algs each get their error."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise invalid_grant("token header has no alg", "malformed")
    if alg.lower() == "none":
        raise invalid_grant("unsigned tokens (alg none) are refused", "alg_none")
    if alg.startswith(SYMMETRIC_PREFIXES):
        raise invalid_grant(
            f"symmetric algorithm {alg} is refused; issuers must sign with an asymmetric key", "alg_symmetric"
        )
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise invalid_grant(f"algorithm {alg} is not supported", "alg_unsupported")
    if "crit" in header:
        raise invalid_grant("tokens with critical header extensions are refused", "malformed")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise invalid_grant("token header kid must be a string", "malformed")
    return alg, kid


def check_key_agreement(alg: str, jwk: Mapping[str, Any], kid: str | None) -> None:
    """The key named by kid must be of the type the algorithm needs (and say so if it names its alg)."""
    kty, crv = ASYMMETRIC_ALGORITHMS[alg]
    name = f"key {kid!r}" if kid else "the issuer's key"
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        have = f"{jwk.get('kty')}{'/' + str(jwk.get('crv')) if jwk.get('crv') else ''}"
        raise invalid_grant(f"algorithm {alg} does not match {name} of type {have}", "alg_key_mismatch")
    if jwk.get("alg") not in (None, alg):
        raise invalid_grant(
            f"algorithm {alg} does not match {name}, published for {jwk.get('alg')}", "alg_key_mismatch"
        )
    if jwk.get("use") not in (None, "sig"):
        raise invalid_grant(f"{name} is not a signing key", "alg_key_mismatch")


def unknown_kid(kid: str | None) -> OAuthError:
    if kid is None:
        return invalid_grant("token has no kid and the issuer publishes several keys", "kid_unknown")
    return invalid_grant(f"no key {kid!r} in the issuer's JWKS (after a refetch)", "kid_unknown")
