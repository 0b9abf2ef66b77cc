"""WorkloadConnection rules: provider presets, tenant binding of multi-tenant issuers, keys, TTL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kubepam.domain.connection import Phase, parse_connection, phase_of
from kubepam.domain.errors import SpecError

BIND_REPO = [{"claim": "repository", "operator": "equals", "value": "acme/payments"}]
INLINE = {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "k"}]}


def spec(**kw: Any) -> dict[str, Any]:
    return {"audiences": ["kubepam"], **kw}


@pytest.mark.parametrize(
    ("provider", "extra", "issuer", "jwks_url"),
    [
        (
            "github",
            {"claims": BIND_REPO},
            "https://token.actions.githubusercontent.com",
            "https://token.actions.githubusercontent.com/.well-known/jwks",
        ),
        (
            "gitlab",
            {"claims": [{"claim": "project_path", "operator": "equals", "value": "acme/web"}]},
            "https://gitlab.com",
            "https://gitlab.com/oauth/discovery/keys",
        ),
        (
            "gitlab",
            {"issuer": "https://gitlab.acme.internal"},
            "https://gitlab.acme.internal",
            "https://gitlab.acme.internal/oauth/discovery/keys",
        ),
        (
            "circleci",
            {"issuer": "https://oidc.circleci.com/org/0b1c2d3e-1111-2222-3333-444455556666"},
            "https://oidc.circleci.com/org/0b1c2d3e-1111-2222-3333-444455556666",
            "https://oidc.circleci.com/org/0b1c2d3e-1111-2222-3333-444455556666/.well-known/jwks-pub.json",
        ),
        (
            "gcp",
            {"claims": [{"claim": "/google/compute_engine/project_id", "operator": "equals", "value": "p"}]},
            "https://accounts.google.com",
            "https://www.googleapis.com/oauth2/v3/certs",
        ),
        (
            "generic",
            {
                "issuer": "https://ci.acme.internal",
                "jwksUrl": "https://ci.acme.internal/jwks",
                "algorithms": ["ES256"],
            },
            "https://ci.acme.internal",
            "https://ci.acme.internal/jwks",
        ),
    ],
)
def test_presets_fill_issuer_and_jwks(
    provider: str, extra: dict[str, Any], issuer: str, jwks_url: str
) -> None:
    conn = parse_connection(spec(provider=provider, **extra))
    assert conn.issuer == issuer
    assert conn.jwks_url == jwks_url


@pytest.mark.parametrize(
    ("provider", "claims", "ok"),
    [
        ("github", [], False),
        (
            "github",
            [{"claim": "ref", "operator": "equals", "value": "refs/heads/main"}],
            False,
        ),  # not a tenant claim
        ("github", [{"claim": "repository", "operator": "exists"}], False),  # exists binds nothing
        ("github", [{"claim": "repository", "operator": "notIn", "values": ["x/y"]}], False),
        ("github", [{"claim": "repository", "operator": "glob", "value": "**"}], False),  # all wildcards
        ("github", [{"claim": "sub", "operator": "regex", "value": ".*"}], False),
        ("github", [{"claim": "repository_owner", "operator": "equals", "value": "acme"}], True),
        ("github", [{"claim": "sub", "operator": "startsWith", "value": "repo:acme/"}], True),
        ("github", [{"claim": "repository", "operator": "glob", "value": "acme/*"}], True),
        ("gitlab", [{"claim": "namespace_path", "operator": "in", "values": ["acme"]}], True),
        ("gitlab", [], False),
        ("gcp", [{"claim": "email", "operator": "equals", "value": "ci@acme.iam.gserviceaccount.com"}], True),
        ("gcp", [], False),
    ],
)
def test_multi_tenant_issuers_must_bind_a_tenant(
    provider: str, claims: list[dict[str, Any]], ok: bool
) -> None:
    if ok:
        parse_connection(spec(provider=provider, claims=claims))
    else:
        with pytest.raises(SpecError, match="multi-tenant issuer"):
            parse_connection(spec(provider=provider, claims=claims))


def test_self_hosted_issuer_of_a_multi_tenant_provider_needs_no_binding() -> None:
    parse_connection(
        spec(
            provider="github",
            issuer="https://ghe.acme.internal/_services/token",
            jwksUrl="https://ghe.acme.internal/_services/token/.well-known/jwks",
        )
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"provider": "bitbucket"}, "spec.provider: must be one of"),
        ({"provider": "generic"}, "spec.issuer: required"),
        ({"provider": "generic", "issuer": "https://x"}, "spec.jwksUrl: required"),
        (
            {"provider": "generic", "issuer": "https://x", "jwksUrl": "https://x/j", "jwks": INLINE},
            "not both",
        ),
        ({"provider": "generic", "issuer": "https://x", "jwksUrl": "http://x.example/j"}, "must be https://"),
        ({"provider": "circleci", "issuer": "https://oidc.circleci.com/org/acme"}, "<org-uuid>"),
        ({"provider": "generic", "issuer": "https://x", "jwks": {"keys": []}}, "non-empty keys"),
        ({"provider": "github", "claims": BIND_REPO, "audiences": []}, "spec.audiences"),
        ({"provider": "github", "claims": BIND_REPO, "accessTokenTTL": "10s"}, "between 1m and 12h"),
        ({"provider": "github", "claims": BIND_REPO, "accessTokenTTL": "13h"}, "between 1m and 12h"),
        ({"provider": "github", "claims": BIND_REPO, "accessTokenTTL": "soon"}, "not a duration"),
    ],
)
def test_bad_specs_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_connection(spec(**extra))


def test_plain_http_only_to_localhost() -> None:
    conn = parse_connection(
        spec(
            provider="generic", issuer="https://x", jwksUrl="http://127.0.0.1:9000/jwks", algorithms=["RS256"]
        )
    )
    assert conn.jwks_url == "http://127.0.0.1:9000/jwks"


def test_ttl_defaults_to_15_minutes_and_audiences_are_a_set() -> None:
    conn = parse_connection(spec(provider="github", claims=BIND_REPO, audiences=["a", "b", "a"]))
    assert conn.access_token_ttl == timedelta(minutes=15)
    assert conn.audiences == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (None, Phase.DRAFT),
        ({}, Phase.DRAFT),
        ({"phase": "Draft"}, Phase.DRAFT),
        ({"phase": "Active"}, Phase.ACTIVE),
        ({"phase": "active"}, Phase.DRAFT),
    ],
)
def test_only_an_explicit_active_is_active(status: dict[str, Any] | None, phase: Phase) -> None:
    assert phase_of(status) is phase


@pytest.mark.parametrize(
    ("provider", "extra"),
    [
        ("github", {"claims": BIND_REPO}),
        ("gitlab", {"issuer": "https://gitlab.acme.internal"}),
        ("circleci", {"issuer": "https://oidc.circleci.com/org/0b1c2d3e-1111-2222-3333-444455556666"}),
        ("gcp", {"issuer": "https://accounts.acme.internal", "jwksUrl": "https://accounts.acme.internal/k"}),
    ],
)
def test_algorithms_default_to_what_the_preset_issuer_signs_with(
    provider: str, extra: dict[str, Any]
) -> None:
    assert parse_connection(spec(provider=provider, **extra)).algorithms == ("RS256",)
    named = parse_connection(spec(provider=provider, algorithms=["ES256", "RS256", "ES256"], **extra))
    assert named.algorithms == ("ES256", "RS256")


@pytest.mark.parametrize(
    ("algorithms", "message"),
    [
        (None, "spec.algorithms: required for provider generic"),
        ([], "spec.algorithms: a non-empty list"),
        (["HS256"], "spec.algorithms: 'HS256' is not one of RS256"),
        (["none"], "spec.algorithms: 'none' is not one of"),
    ],
)
def test_generic_connections_must_name_asymmetric_algorithms(algorithms: Any, message: str) -> None:
    extra = {} if algorithms is None else {"algorithms": algorithms}
    with pytest.raises(SpecError, match=message):
        parse_connection(spec(provider="generic", issuer="https://x", jwksUrl="https://x/j", **extra))


def test_inline_keys_for_none_of_the_algorithms_are_refused() -> None:
    keys = {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "k", "alg": "ES256"}]}
    with pytest.raises(
        SpecError, match=r"spec.jwks: every key is for ES256, none of spec.algorithms \(RS256\)"
    ):
        parse_connection(spec(provider="github", claims=BIND_REPO, jwks=keys))
    assert parse_connection(spec(provider="github", claims=BIND_REPO, jwks=keys, algorithms=["ES256"]))
