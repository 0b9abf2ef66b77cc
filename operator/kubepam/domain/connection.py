"""WorkloadConnection rules: what a spec means once presets are applied, and whether it is safe.

Pure: takes the spec mapping, returns an immutable :class:`Connection` or raises SpecError with every
problem, each naming its field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kubepam.domain.claims import ClaimCondition, Op, parse_conditions
from kubepam.domain.durations import parse_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.patterns import is_wildcard_only
from kubepam.domain.providers import PROVIDERS, Provider, default_jwks_url
from kubepam.domain.text import quoted
from kubepam.domain.token_rules import ASYMMETRIC_ALGORITHMS

DEFAULT_ACCESS_TOKEN_TTL = timedelta(minutes=15)
MIN_ACCESS_TOKEN_TTL = timedelta(minutes=1)
MAX_ACCESS_TOKEN_TTL = timedelta(hours=12)
BINDING_OPERATORS = frozenset({Op.EQUALS, Op.IN, Op.STARTS_WITH, Op.GLOB, Op.REGEX})
_UNBINDING_REGEXES = frozenset({".*", ".+", "(.*)", "(.+)", "^.*$", "^.+$"})


class Phase(enum.StrEnum):
    DRAFT = "Draft"
    ACTIVE = "Active"


def phase_of(status: Mapping[str, Any] | None) -> Phase:
    """A connection is Draft unless a security admin has set Active (missing status is Draft)."""
    return Phase.ACTIVE if (status or {}).get("phase") == Phase.ACTIVE.value else Phase.DRAFT


@dataclass(frozen=True)
class Connection:
    provider: Provider
    issuer: str
    jwks_url: str | None
    inline_jwks: Mapping[str, Any] | None
    audiences: frozenset[str]
    claims: tuple[ClaimCondition, ...]
    access_token_ttl: timedelta
    algorithms: tuple[str, ...] = ("RS256",)  # checked before any signature is verified


def _is_binding(cond: ClaimCondition, provider: Provider) -> bool:
    if cond.claim not in provider.binding_claims or cond.op not in BINDING_OPERATORS:
        return False
    if cond.op is Op.GLOB:
        return cond.value is not None and not is_wildcard_only(cond.value)
    if cond.op is Op.REGEX:
        return cond.value not in _UNBINDING_REGEXES
    if cond.op is Op.STARTS_WITH:
        return bool(cond.value)
    return True


def _url_ok(url: str) -> bool:
    if url.startswith("https://"):
        return True
    # Plain HTTP only to this machine (tests and local development), never across a network.
    return any(
        url.startswith(f"http://{host}")
        for host in ("127.0.0.1:", "127.0.0.1/", "localhost:", "localhost/", "[::1]:")
    )


def _algorithms(spec: Mapping[str, Any], provider: Provider, problems: list[str]) -> tuple[str, ...]:
    raw = spec.get("algorithms")
    if raw is None:
        if not provider.algorithms:
            problems.append(
                f"spec.algorithms: required for provider {provider.name}: the algorithms the issuer signs "
                f"with, e.g. [RS256] (one or more of {', '.join(ASYMMETRIC_ALGORITHMS)})"
            )
        return provider.algorithms
    if not isinstance(raw, list) or not raw:
        problems.append("spec.algorithms: a non-empty list of algorithms is required")
        return ()
    unknown = [a for a in raw if a not in ASYMMETRIC_ALGORITHMS]
    if unknown:
        problems.append(
            f"spec.algorithms: {quoted(unknown[0])} is not one of {', '.join(ASYMMETRIC_ALGORITHMS)}"
        )
        return ()
    return tuple(dict.fromkeys(raw))


def _inline_keys_problem(inline: Mapping[str, Any], algorithms: tuple[str, ...]) -> str | None:
    """An inline JWK Set whose keys all name an algorithm the connection does not accept verifies nothing."""
    keys = [k for k in inline.get("keys") or [] if isinstance(k, Mapping)]
    named = [a for k in keys if isinstance(a := k.get("alg"), str)]
    if algorithms and keys and len(named) == len(keys) and not set(named) & set(algorithms):
        return (
            f"spec.jwks: every key is for {', '.join(sorted(set(named)))}, none of spec.algorithms "
            f"({', '.join(algorithms)})"
        )
    return None


def parse_connection(spec: Mapping[str, Any]) -> Connection:
    problems: list[str] = []
    provider_name = spec.get("provider")
    provider = PROVIDERS.get(provider_name) if isinstance(provider_name, str) else None
    if provider is None:
        raise SpecError([f"spec.provider: must be one of {', '.join(PROVIDERS)}"])

    issuer = spec.get("issuer") or provider.issuer
    if not isinstance(issuer, str) or not issuer:
        problems.append(f"spec.issuer: required for provider {provider.name}")
        issuer = ""
    elif provider.issuer_pattern is not None and not provider.issuer_pattern.match(issuer):
        problems.append(
            f"spec.issuer: {provider.name} issuers look like https://oidc.circleci.com/org/<org-uuid>"
        )

    jwks_url = spec.get("jwksUrl")
    inline = spec.get("jwks")
    if jwks_url and inline:
        problems.append("spec: give either jwksUrl or jwks, not both")
    if not jwks_url and not inline:
        jwks_url = default_jwks_url(provider, issuer) if issuer else None
        if jwks_url is None:
            problems.append(f"spec.jwksUrl: required for provider {provider.name} (or give inline spec.jwks)")
    if isinstance(jwks_url, str) and jwks_url and not _url_ok(jwks_url):
        problems.append("spec.jwksUrl: must be https:// (plain http only to localhost)")
    if inline is not None and (
        not isinstance(inline, Mapping) or not isinstance(inline.get("keys"), list) or not inline["keys"]
    ):
        problems.append("spec.jwks: must be a JWK Set with a non-empty keys list")
    algorithms = _algorithms(spec, provider, problems)
    if isinstance(inline, Mapping) and (problem := _inline_keys_problem(inline, algorithms)):
        problems.append(problem)

    audiences = spec.get("audiences")
    if (
        not isinstance(audiences, list)
        or not audiences
        or not all(isinstance(a, str) and a for a in audiences)
    ):
        problems.append("spec.audiences: at least one audience is required")
        audiences = []

    claims: tuple[ClaimCondition, ...] = ()
    try:
        claims = parse_conditions(spec.get("claims"), "spec.claims")
    except SpecError as exc:
        problems.extend(exc.problems)
    else:
        default_issuer = provider.issuer is not None and issuer == provider.issuer
        if provider.multi_tenant and default_issuer and not any(_is_binding(c, provider) for c in claims):
            names = ", ".join(sorted(provider.binding_claims))
            problems.append(
                f"spec.claims: {provider.name} is a multi-tenant issuer; bind at least one of {names} with "
                f"equals, in, startsWith, glob or regex (a pattern that is not all wildcards), "
                "or any tenant of the issuer could log in"
            )

    ttl = DEFAULT_ACCESS_TOKEN_TTL
    raw_ttl = spec.get("accessTokenTTL")
    if raw_ttl is not None:
        try:
            ttl = parse_duration(raw_ttl)
        except ValueError as exc:
            problems.append(f"spec.accessTokenTTL: {exc}")
        else:
            if not MIN_ACCESS_TOKEN_TTL <= ttl <= MAX_ACCESS_TOKEN_TTL:
                problems.append("spec.accessTokenTTL: must be between 1m and 12h")

    if problems:
        raise SpecError(problems)
    return Connection(
        provider=provider,
        issuer=issuer,
        jwks_url=jwks_url if isinstance(jwks_url, str) and jwks_url else None,
        inline_jwks=inline if isinstance(inline, Mapping) else None,
        audiences=frozenset(audiences),
        claims=claims,
        access_token_ttl=ttl,
        algorithms=algorithms,
    )
