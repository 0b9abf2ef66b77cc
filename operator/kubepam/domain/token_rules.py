"""Rules for the JWTs kubepam accepts from workload issuers, before and around signature checks.

Asymmetric algorithms only, and the algorithm must agree with the key type (an RSA key never
verifies an HS256 or ES256 token), and it must be one the connection names (``spec.algorithms``);
size and shape limits come first so hostile input is refused cheaply, before anything is decoded.
Header and payload are decoded strictly here, not by the library's lenient defaults: base64url
alphabet, strict UTF-8, no lone surrogates, no NaN, nesting bounded (:mod:`kubepam.domain.strict_json`);
after the signature verifies, the registered claims must have their RFC 7519 types. All refusals are
OAuthErrors with their own outcome label; any value from the token they quote is cut to 64 characters.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Mapping
from typing import Any

from kubepam.domain import strict_json
from kubepam.domain.oauth import OAuthError, invalid_grant, invalid_request
from kubepam.domain.text import clip, quoted

MAX_TOKEN_BYTES = 64 * 1024  # a GitLab user in hundreds of groups has a ~20 KiB ID token
LEEWAY_SECONDS = 60
MAX_CLAIMS_DEPTH = 16  # real tokens nest 3 levels (Google's); deeper is refused before parsing
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")

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
    """Size and segment checks that need no parsing (the size first: nothing is decoded before it)."""
    if len(token) > MAX_TOKEN_BYTES:  # characters <= bytes; a non-ASCII token fails the alphabet below
        raise invalid_request(f"subject_token is larger than {MAX_TOKEN_BYTES} bytes", "oversize")
    if token.count(".") != 2:
        raise invalid_grant(
            f"subject_token is not a JWS compact serialization (3 segments, got {token.count('.') + 1})",
            "malformed",
        )
    header, payload, _ = token.split(".")
    if not header or not payload:
        raise invalid_grant("subject_token has an empty header or payload segment", "malformed")
    if not _COMPACT_JWS.fullmatch(token):
        raise invalid_grant("subject_token has characters outside the base64url alphabet", "malformed")


def _segment_json(segment: str, what: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (ValueError, binascii.Error):
        raise invalid_grant(f"token {what} is not base64url", "malformed") from None
    return _strict(raw, what)


def _strict(raw: bytes, what: str) -> Any:
    try:
        return strict_json.loads(raw, max_depth=MAX_CLAIMS_DEPTH)
    except strict_json.JsonError as exc:
        raise invalid_grant(f"token {what} is not strict JSON: {exc}", "malformed") from None


def peek_header(token: str) -> Mapping[str, Any]:
    """The JOSE header, decoded strictly, to choose the key and check the algorithm before verification."""
    header = _segment_json(token.split(".", 1)[0], "header")
    if not isinstance(header, dict):
        raise invalid_grant("token header is not a JSON object", "malformed")
    return header


def payload_claims(raw: bytes) -> dict[str, Any]:
    """The payload of a token whose signature verified: strict JSON, an object, registered claims typed."""
    claims = _strict(raw, "payload")
    if not isinstance(claims, dict):
        raise invalid_grant("token payload is not a JSON object", "malformed")
    check_claim_types(claims)
    return claims


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def check_claim_types(claims: Mapping[str, Any]) -> None:
    """RFC 7519 types of the registered claims, each refused with its own description: exp, nbf and iat
    are JSON numbers (never strings or booleans: no library coercion decides), iss, sub and jti strings,
    aud a string or an array of strings."""
    for name in ("exp", "nbf", "iat"):
        if name in claims:
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise invalid_grant(
                    f"{name} must be a JSON number (seconds since the epoch), not {_json_type(value)}",
                    "claim_type",
                )
    for name in ("iss", "sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise invalid_grant(f"{name} must be a string, not {_json_type(claims[name])}", "claim_type")
    aud = claims.get("aud")
    if "aud" in claims and not isinstance(aud, str):
        if not isinstance(aud, list):
            raise invalid_grant(
                f"aud must be a string or an array of strings, not {_json_type(aud)}", "claim_type"
            )
        if not all(isinstance(a, str) for a in aud):
            raise invalid_grant(
                "aud must be a string or an array of strings; an element is not a string", "claim_type"
            )


def check_header(header: Mapping[str, Any]) -> tuple[str, str | None]:
    """Returns (alg, kid) or refuses: alg none, symmetric algs and unknown algs each get their error."""
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise invalid_grant("token header has no alg", "malformed")
    if alg.lower() == "none":
        raise invalid_grant("unsigned tokens (alg none) are refused", "alg_none")
    if alg.startswith(SYMMETRIC_PREFIXES):
        raise invalid_grant(
            f"symmetric algorithm {clip(alg)} is refused; issuers must sign with an asymmetric key",
            "alg_symmetric",
        )
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise invalid_grant(f"algorithm {clip(alg)} is not supported", "alg_unsupported")
    if "crit" in header:
        raise invalid_grant("tokens with critical header extensions are refused", "malformed")
    kid = header.get("kid")
    if "kid" in header and not isinstance(kid, str):
        raise invalid_grant("token header kid must be a string", "malformed")
    return alg, kid


def check_algorithm_allowed(alg: str, allowed: Collection[str]) -> None:
    """The connection's ``spec.algorithms``, checked before any key is looked up or signature verified:
    an issuer that signs RS256 never has a PS256 token accepted under its RSA key."""
    if alg not in allowed:
        raise invalid_grant(
            f"algorithm {alg} is not accepted by this connection (spec.algorithms: {', '.join(allowed)})",
            "alg_not_allowed",
        )


def check_key_agreement(alg: str, jwk: Mapping[str, Any], kid: str | None) -> None:
    """The key named by kid must be of the type the algorithm needs (and say so if it names its alg)."""
    kty, crv = ASYMMETRIC_ALGORITHMS[alg]
    name = f"key {quoted(kid)}" if kid else "the issuer's key"
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        have = clip(f"{jwk.get('kty')}{'/' + str(jwk.get('crv')) if jwk.get('crv') else ''}")
        raise invalid_grant(f"algorithm {alg} does not match {name} of type {have}", "alg_key_mismatch")
    if jwk.get("alg") not in (None, alg):
        raise invalid_grant(
            f"algorithm {alg} does not match {name}, published for {clip(jwk.get('alg'))}",
            "alg_key_mismatch",
        )
    if jwk.get("use") not in (None, "sig"):
        raise invalid_grant(f"{name} is not a signing key", "alg_key_mismatch")


def unknown_kid(kid: str | None) -> OAuthError:
    if kid is None:
        return invalid_grant("token has no kid and the issuer publishes several keys", "kid_unknown")
    return invalid_grant(f"no key {quoted(kid)} in the issuer's JWKS (after a refetch)", "kid_unknown")
