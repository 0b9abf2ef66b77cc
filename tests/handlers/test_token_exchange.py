"""Token exchange and validation as a service: tokens shaped like each provider's, Draft vs Active,
role matching, the access token's contents, and a table of hostile tokens each refused with its own
error that never quotes the token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
import pytest

from kubepam.adapters.signing import SigningKeys
from kubepam.domain.connection import Phase
from kubepam.domain.oauth import GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT, OAuthError
from kubepam.services.workload_identity import TokenExchange
from tests.handlers.fakes import Clock, FakeDirectory, FakeFetcher, FakeSecrets, jwks_cache, record_outcomes
from tests.tokens import AUDIENCE, CIRCLE_PROJECT, ISSUERS, Issuer, hostile_tokens

JWKS_URL = "https://issuer.test/jwks"

BINDINGS: dict[str, list[dict[str, Any]]] = {
    "github": [{"claim": "repository", "operator": "equals", "value": "acme/payments"}],
    "gitlab": [{"claim": "namespace_path", "operator": "equals", "value": "acme"}],
    "circleci": [{"claim": "oidc.circleci.com/project-id", "operator": "equals", "value": CIRCLE_PROJECT}],
    "gcp": [{"claim": "/google/compute_engine/project_id", "operator": "equals", "value": "acme-prod"}],
    "generic": [{"claim": "pipeline", "operator": "startsWith", "value": "acme/"}],
}
ROLE_MATCH: dict[str, dict[str, Any]] = {
    "github": {"claim": "ref", "operator": "equals", "value": "refs/heads/main"},
    "gitlab": {"claim": "ref_protected", "operator": "equals", "value": "true"},
    "circleci": {"claim": "oidc.circleci.com/vcs-ref", "operator": "glob", "value": "refs/heads/*"},
    "gcp": {"claim": "/google/compute_engine/project_number", "operator": "in", "values": ["1234567890"]},
    "generic": {"claim": "run", "operator": "regex", "value": "[0-9]+"},
}


class World:
    def __init__(
        self,
        provider: str = "generic",
        alg: str = "RS256",
        record: Any = None,
        algorithms: list[str] | None = None,
    ) -> None:
        self.clock = Clock()
        self.issuer = Issuer(ISSUERS[provider], alg=alg)
        self.fetcher = FakeFetcher(self.issuer.jwks())
        self.jwks = jwks_cache(self.fetcher, self.clock)
        self.directory = FakeDirectory()
        spec: dict[str, Any] = {
            "provider": provider,
            "audiences": [AUDIENCE],
            "claims": BINDINGS[provider],
            "jwksUrl": JWKS_URL,
            "accessTokenTTL": "10m",
        }
        if provider in ("circleci", "generic"):
            spec["issuer"] = ISSUERS[provider]
        if provider == "generic" or algorithms is not None:
            spec["algorithms"] = algorithms or [alg]
        self.directory.add_connection("team-a", "ci", spec)
        self.directory.add_role("team-a", "deployer", {"match": [{"conditions": [ROLE_MATCH[provider]]}]})
        self.directory.add_role(
            "team-a",
            "other",
            {"match": [{"conditions": [{"claim": "sub", "operator": "equals", "value": "nobody"}]}]},
        )
        self.signing = SigningKeys(
            FakeSecrets(),
            "kubepam-system",
            "keys",
            rotation_period=timedelta(days=7),
            max_token_ttl=timedelta(hours=12),
        )
        self.outcomes, recorder = record_outcomes()
        self.exchange = TokenExchange(
            self.directory,
            self.jwks,
            self.signing,
            issuer="https://kubepam.test",
            audience="kubepam",
            clock=self.clock,
            record=record or recorder,
        )

    async def start(self) -> World:
        await self.signing.sync(self.clock())
        return self


def form(token: str, connection: str = "team-a/ci", **extra: str) -> dict[str, str]:
    return {
        "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "connection": connection,
        **extra,
    }


@pytest.mark.parametrize("provider", ["github", "gitlab", "circleci", "gcp", "generic"])
async def test_provider_shaped_tokens_are_exchanged_for_an_access_token(provider: str) -> None:
    world = await World(provider).start()
    result = await world.exchange.exchange(form(world.issuer.mint(provider)))
    assert result.roles == ("team-a/deployer",)
    assert result.expires_in == 600
    header = jwt.get_unverified_header(result.access_token)
    assert header["alg"] == "EdDSA" and header["kid"] == world.signing.active.record.kid
    key = world.signing.verification_key(header["kid"])
    claims = jwt.decode(
        result.access_token, key, algorithms=["EdDSA"], audience="kubepam", issuer="https://kubepam.test"
    )
    assert claims["connection"] == "team-a/ci"
    assert claims["roles"] == ["team-a/deployer"] and claims["usernames"] == ["wl_deployer"]
    assert claims["exp"] - claims["iat"] == 600
    binding = BINDINGS[provider][0]["claim"]
    assert binding in claims["src"]  # the claims that decided are carried, not the whole token
    assert "jti" not in claims["src"]
    assert world.outcomes == [("token", "issued")]


async def test_draft_connection_validates_but_issues_nothing() -> None:
    world = await World("github").start()
    world.directory.entries[("team-a", "ci")] = world.directory.entries[("team-a", "ci")].__class__(
        "team-a", "ci", Phase.DRAFT, world.directory.entries[("team-a", "ci")].connection
    )
    token = world.issuer.mint("github")
    with pytest.raises(OAuthError) as err:
        await world.exchange.exchange(form(token))
    assert (err.value.error, err.value.status, err.value.outcome) == (
        "unauthorized_client",
        403,
        "connection_draft",
    )
    report = await world.exchange.validate(form(token))
    assert report["verdict"] == "valid" and report["phase"] == "Draft"
    assert report["matchedRoles"] == [] and report["wouldMatchWhenActive"] == ["team-a/deployer"]
    assert report["wouldIssue"] is False
    assert report["trace"][0] == {
        "claim": "repository",
        "operator": "equals",
        "expected": "acme/payments",
        "actual": "acme/payments",
        "matched": True,
        "reason": "matches",
    }


async def test_validate_traces_a_failed_condition_claim_by_claim() -> None:
    world = await World("github").start()
    report = await world.exchange.validate(form(world.issuer.mint("github", repository="evil/fork")))
    assert report["verdict"] == "invalid" and report["stage"] == "claims"
    assert report["trace"][0]["actual"] == "evil/fork" and report["trace"][0]["matched"] is False
    roles = {r["role"]: r for r in report["roles"]}
    assert roles["team-a/deployer"]["matchedBlock"] == 0  # the role alone would match...
    assert report["matchedRoles"] == []  # ...but the connection's conditions fail first


async def test_connection_conditions_and_roles_gate_issuance() -> None:
    world = await World("github").start()
    with pytest.raises(OAuthError) as err:
        await world.exchange.exchange(form(world.issuer.mint("github", repository="evil/fork")))
    assert err.value.outcome == "claims_mismatch"
    assert "repository equals acme/payments" in err.value.description
    with pytest.raises(OAuthError) as err:
        await world.exchange.exchange(form(world.issuer.mint("github", ref="refs/heads/feature")))
    assert (err.value.error, err.value.outcome) == ("access_denied", "no_role")


@pytest.mark.parametrize(
    ("params", "error", "fragment"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", "grant_type must be"),
        ({"subject_token": ""}, "invalid_request", "subject_token is required"),
        (
            {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
            "invalid_request",
            "subject_token_type",
        ),
        ({"connection": ""}, "invalid_request", "connection is required"),
        ({"connection": "no-namespace"}, "invalid_request", "connection must be namespace/name"),
        ({"connection": "team-a/missing"}, "invalid_client", "no WorkloadConnection team-a/missing"),
    ],
)
async def test_bad_requests_get_specific_errors(params: dict[str, str], error: str, fragment: str) -> None:
    world = await World().start()
    with pytest.raises(OAuthError) as err:
        await world.exchange.exchange({**form(world.issuer.mint()), **params})
    assert err.value.error == error and fragment in err.value.description


async def test_unknown_connection_before_the_first_listing_is_retryable() -> None:
    world = await World().start()
    world.directory.is_synced = False
    with pytest.raises(OAuthError) as err:
        await world.exchange.exchange(form(world.issuer.mint(), connection="team-a/missing"))
    assert (err.value.error, err.value.status) == ("temporarily_unavailable", 503)


async def test_hostile_tokens_are_each_refused_with_their_own_error() -> None:
    world = await World("generic", alg="RS256").start()
    cases = hostile_tokens(world.issuer)
    descriptions = set()
    for name, token, outcome, status in cases:
        world.clock.advance(seconds=11)  # let the kid-unknown case refetch once
        with pytest.raises(OAuthError) as err:
            await world.exchange.exchange(form(token))
        assert err.value.outcome == outcome, (name, err.value)
        assert err.value.status == status, name
        assert token not in err.value.description and token[:40] not in err.value.description
        descriptions.add(err.value.description)
    assert len(descriptions) == len(cases)  # every attack gets its own explanation
    assert [o for _, o in world.outcomes] == [c[2] for c in cases]


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
async def test_every_asymmetric_algorithm_is_accepted_with_a_matching_key(alg: str) -> None:
    world = await World("generic", alg=alg).start()
    assert (await world.exchange.exchange(form(world.issuer.mint()))).roles == ("team-a/deployer",)


async def test_algorithm_must_agree_with_the_key_type() -> None:
    world = await World("generic", alg="RS256", algorithms=["RS256", "ES256"]).start()
    ec_issuer = Issuer(world.issuer.issuer, alg="ES256", kid=world.issuer.kid)  # ES256 token, RSA key's kid
    with pytest.raises(OAuthError) as err:
        await world.exchange.exchange(form(ec_issuer.mint()))
    assert err.value.outcome == "alg_key_mismatch" and "ES256 does not match" in err.value.description


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        ({"aud": ["https://other.example", AUDIENCE]}, True),  # aud may be a list naming ours
        ({"aud": ["https://other.example"]}, False),
        ({"iat": "now+30", "nbf": "now+30"}, True),  # within the 60 s leeway
        ({"iat": "now+90", "nbf": "now"}, False),  # iat in the future beyond the leeway
        ({"exp": "now-30"}, True),  # expired 30 s ago: still within the leeway
        ({"exp": "now-90"}, False),
    ],
)
async def test_audience_lists_and_clock_leeway(overrides: dict[str, Any], accepted: bool) -> None:
    import time

    world = await World("github").start()
    now = int(time.time())
    resolved = {
        k: (now + int(v[3:] or 0) if isinstance(v, str) and v.startswith("now") else v)
        for k, v in overrides.items()
    }
    token = world.issuer.mint("github", **resolved)
    if accepted:
        assert (await world.exchange.exchange(form(token))).roles == ("team-a/deployer",)
    else:
        with pytest.raises(OAuthError):
            await world.exchange.exchange(form(token))
