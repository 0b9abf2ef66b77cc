"""Verify a workload's JWT against one connection with PyJWT: shape, header rules, key lookup,
algorithm/key agreement, signature, then exp (required), nbf/iat (60 s leeway), exact iss and aud.

Each failure is an OAuthError with its own outcome; descriptions never quote the token.
"""

from __future__ import annotations

from typing import Any, Protocol

import jwt

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


_JWT = jwt.PyJWT(options={"require": ["exp", "iss", "aud"], "verify_sub": False, "verify_jti": False})


async def verify_token(
    token: str, target: TokenTarget, inline: KeySet | None, keys: KeySource
) -> dict[str, Any]:
    token_rules.check_shape(token)
    alg, kid = token_rules.check_header(token_rules.peek_header(token))
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
