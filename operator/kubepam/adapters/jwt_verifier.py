"""Verify a workload's JWT against one connection with PyJWT: size and shape, the strictly decoded
header's rules, the connection's algorithms, key lookup, algorithm/key agreement, signature, then the
payload decoded strictly with its registered claims' types checked (a PyJWT subclass replaces the
library's lenient payload decoding, which runs after the signature and before claim validation), then
exp (required), nbf/iat (60 s leeway), exact iss and aud.

Each failure is an OAuthError with its own outcome; descriptions never quote the token.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Protocol

import jwt
from jwt.utils import base64url_decode, base64url_encode

from kubepam.adapters.jwks import KeySet, VerificationKey
from kubepam.domain import token_rules
from kubepam.domain.oauth import invalid_grant


class KeySource(Protocol):
    async def key(self, url: str, kid: str | None) -> VerificationKey: ...


class TokenTarget(Protocol):
    """What a connection says about acceptable tokens."""

    @property
    def issuer(self) -> str: ...
    @property
    def audiences(self) -> frozenset[str]: ...
    @property
    def jwks_url(self) -> str | None: ...
    @property
    def algorithms(self) -> Collection[str]: ...


_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")


class _SegmentsJWS(jwt.PyJWS):
    """PyJWS with its segment rule (base64url alphabet, no impossible length, canonical encoding) checked
    by one regular expression instead of a Python loop per character: that loop ran before any signature
    check and cost ~5 ms for a 64 KiB token, ten times the rest of the work. kubepam sends no padding
    (check_shape refuses '=' already)."""

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        if len(segment) % 4 == 1 or not _SEGMENT.fullmatch(segment):
            raise jwt.DecodeError(f"Invalid {name} padding")
        decoded = base64url_decode(segment)
        if base64url_encode(decoded) != segment:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


class _StrictJWT(jwt.PyJWT):
    """PyJWT with kubepam's payload rules: PyJWT calls this after the signature verified and before it
    validates claims (its documented extension point), so type errors are never left to its coercions
    (it reads exp with int(), which takes "1700000300", " 1700000300 " and "1_700_000_300")."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)  # type: ignore[arg-type]
        self._jws = _SegmentsJWS(options=self._jws.options)

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        return token_rules.payload_claims(decoded["payload"])


_JWT = _StrictJWT(options={"require": ["exp", "iss", "aud"]})


async def verify_token(
    token: str, target: TokenTarget, inline: KeySet | None, keys: KeySource
) -> dict[str, Any]:
    token_rules.check_shape(token)
    alg, kid = token_rules.check_header(token_rules.peek_header(token))
    token_rules.check_algorithm_allowed(alg, target.algorithms)
    found: VerificationKey | None
    if inline is not None:
        found = inline.find(kid)
        if found is None:
            raise token_rules.unknown_kid(kid)
    else:
        assert target.jwks_url is not None
        found = await keys.key(target.jwks_url, kid)
    token_rules.check_key_agreement(alg, found.jwk, kid)
    return decode(token, found.key, alg, target)


def decode(token: str, key: Any, alg: str, target: TokenTarget) -> dict[str, Any]:
    try:
        claims = _JWT.decode(
            token,
            key,
            algorithms=[alg],
            audience=list(target.audiences),
            issuer=target.issuer,
            leeway=token_rules.LEEWAY_SECONDS,
        )
    except jwt.InvalidSignatureError:
        raise invalid_grant("signature does not verify with the issuer's key", "bad_signature") from None
    except jwt.ExpiredSignatureError:
        raise invalid_grant("token has expired (exp, with 60 s leeway)", "expired") from None
    except jwt.ImmatureSignatureError as exc:
        which = "iat" if "iat" in str(exc) else "nbf"
        raise invalid_grant(
            f"token is not valid yet ({which} is in the future beyond 60 s leeway)", "not_yet_valid"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise invalid_grant(f"token has no {exc.claim} claim", f"missing_{exc.claim}") from None
    except jwt.InvalidIssuerError:
        raise invalid_grant(
            f"iss does not match the connection's issuer {target.issuer}", "wrong_iss"
        ) from None
    except jwt.InvalidAudienceError:
        expected = ", ".join(sorted(target.audiences))
        raise invalid_grant(
            f"aud names none of the connection's audiences ({expected})", "wrong_aud"
        ) from None
    except jwt.InvalidIssuedAtError:
        raise invalid_grant("iat must be a number", "malformed") from None
    except jwt.InvalidAlgorithmError:
        raise invalid_grant(f"algorithm {alg} is not allowed for this key", "alg_key_mismatch") from None
    except (jwt.InvalidKeyError, TypeError, ValueError):
        raise invalid_grant(f"the issuer's key cannot verify {alg} signatures", "alg_key_mismatch") from None
    except jwt.DecodeError as exc:
        # PyJWT's messages name the broken part, never the token text itself.
        detail = str(exc).split(":")[0]
        raise invalid_grant(f"token is malformed ({detail})", "malformed") from None
    except jwt.InvalidTokenError as exc:
        raise invalid_grant(f"token is invalid ({type(exc).__name__})", "invalid") from None
    return claims
