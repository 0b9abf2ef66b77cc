"""Hostile input, round two (issue 11), finding by finding, against the token exchange service and the
whole broker over HTTP: registered claim types, strict UTF-8, short echoes, per-connection algorithms,
the 64 KiB limit, and never a 500 or an ERROR log line for what a caller sends."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepam.domain.oauth import OAuthError
from tests.handlers.broker_world import BrokerWorld
from tests.handlers.test_token_exchange import World, form
from tests.tokens import AUDIENCE, ISSUERS, Issuer, sign_raw, signed_claims

Client = TestClient[Any, Any]


async def refusal(world: World, token: str) -> OAuthError:
    with pytest.raises(OAuthError) as err:
        await world.exchange.exchange(form(token))
    return err.value


# 1. Registered claims have their RFC 7519 types, each refused with its own description.
NOW = int(time.time())
TYPE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"exp": str(NOW + 300)}, "exp must be a JSON number (seconds since the epoch), not a string"),
    ({"exp": f" {NOW + 300} "}, "exp must be a JSON number (seconds since the epoch), not a string"),
    ({"exp": f"{NOW + 300:_}"}, "exp must be a JSON number (seconds since the epoch), not a string"),
    ({"exp": True}, "exp must be a JSON number (seconds since the epoch), not a boolean"),
    ({"nbf": str(NOW)}, "nbf must be a JSON number (seconds since the epoch), not a string"),
    ({"iat": False}, "iat must be a JSON number (seconds since the epoch), not a boolean"),
    ({"iat": [NOW]}, "iat must be a JSON number (seconds since the epoch), not an array"),
    ({"sub": 1224344}, "sub must be a string, not a number"),
    ({"jti": {"id": 1}}, "jti must be a string, not an object"),
    ({"iss": [ISSUERS["github"]]}, "iss must be a string, not an array"),
    ({"aud": 5}, "aud must be a string or an array of strings, not a number"),
    ({"aud": [AUDIENCE, 5]}, "aud must be a string or an array of strings; an element is not a string"),
]


@pytest.mark.parametrize(("overrides", "description"), TYPE_CASES, ids=[str(c[0]) for c in TYPE_CASES])
async def test_registered_claims_must_have_their_rfc7519_types(
    overrides: dict[str, Any], description: str
) -> None:
    world = await World("github").start()
    token = signed_claims(world.issuer, world.issuer.claims("github", **overrides))
    err = await refusal(world, token)
    assert (err.error, err.status, err.outcome, err.description) == (
        "invalid_grant",
        400,
        "claim_type",
        description,
    )


async def test_a_null_exp_is_a_type_error_not_a_missing_claim() -> None:
    world = await World("github").start()
    err = await refusal(world, signed_claims(world.issuer, {**world.issuer.claims("github"), "exp": None}))
    assert err.description == "exp must be a JSON number (seconds since the epoch), not null"


# 2. Strict UTF-8 and no lone surrogates, in header and payload; claim matching never raises.
def _payload_with(world: World, raw_value: bytes) -> bytes:
    claims = world.issuer.claims("generic")
    text = json.dumps({k: v for k, v in claims.items() if k != "run"})
    return text[:-1].encode() + b', "run": "' + raw_value + b'"}'


@pytest.mark.parametrize(
    ("raw_value", "reason"),
    [
        (b"\xed\xa0\x80", "not valid UTF-8"),  # an encoded lone surrogate
        (b"\\ud800", "lone surrogate"),  # the same as a JSON escape
        (b"7\\udfff", "lone surrogate"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"\xc0\xaf", "not valid UTF-8"),  # an overlong encoding of /
    ],
)
async def test_invalid_utf8_and_lone_surrogates_in_the_payload_are_refused(
    raw_value: bytes, reason: str
) -> None:
    world = await World("generic").start()  # its role matches `run` with a regex (RE2 cannot take surrogates)
    token = sign_raw(
        world.issuer,
        json.dumps({"alg": "RS256", "kid": world.issuer.kid}).encode(),
        _payload_with(world, raw_value),
    )
    err = await refusal(world, token)
    assert (err.error, err.outcome) == ("invalid_grant", "malformed") and reason in err.description
    report = await world.exchange.validate(form(token))
    assert report["verdict"] == "invalid" and report["error"]["error"] == "invalid_grant"


async def test_a_valid_surrogate_pair_is_ordinary_text() -> None:
    world = await World("generic").start()
    token = signed_claims(world.issuer, world.issuer.claims(pipeline="acme/\U0001f600"))
    assert "\\ud83d\\ude00" in json.dumps(world.issuer.claims(pipeline="acme/\U0001f600"))
    assert (await world.exchange.exchange(form(token))).roles == ("team-a/deployer",)


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg": "RS256", "kid": "\xed\xa0\x80"}',
        b'{"alg": "RS256", "kid": "\\udc00"}',
        b'{"alg": "RS256", "kid": "k", "x": NaN}',
        b"[" * 20 + b'{"alg": "RS256"}' + b"]" * 20,
    ],
)
async def test_a_header_that_is_not_strict_json_is_refused(header: bytes) -> None:
    world = await World("generic").start()
    token = sign_raw(world.issuer, header, json.dumps(world.issuer.claims()).encode())
    err = await refusal(world, token)
    assert (err.error, err.outcome) == (
        "invalid_grant",
        "malformed",
    ) and "token header is not" in err.description


# 3. Every echoed value is cut to 64 characters.
async def test_echoed_values_are_cut_to_64_characters() -> None:
    world = await World("generic").start()
    long_kid = "k" * 10_000
    err = await refusal(world, world.issuer.mint(headers={"kid": long_kid}))
    assert (
        err.outcome == "kid_unknown" and "k" * 61 + "'..." in err.description and len(err.description) < 140
    )
    alg = "HS" + "x" * 10_000
    err = await refusal(world, sign_raw(world.issuer, json.dumps({"alg": alg}).encode(), b"{}"))
    assert err.outcome == "alg_symmetric" and len(err.description) < 140
    err = await refusal(world, sign_raw(world.issuer, json.dumps({"alg": "X" * 10_000}).encode(), b"{}"))
    assert err.outcome == "alg_unsupported" and len(err.description) < 140
    long_pipeline = "acme" + "/x" * 5_000
    world.directory.add_connection(
        "team-a",
        "ci",
        {
            "provider": "generic",
            "issuer": ISSUERS["generic"],
            "jwksUrl": "https://issuer.test/jwks",
            "audiences": [AUDIENCE],
            "algorithms": ["RS256"],
            "claims": [{"claim": "pipeline", "operator": "notIn", "values": [long_pipeline[:4000]]}],
        },
    )
    err = await refusal(world, world.issuer.mint(pipeline=long_pipeline[:4000]))
    assert err.outcome == "claims_mismatch" and len(err.description) < 300, err.description


# 4. spec.algorithms, checked before any key is looked up or signature verified.
async def test_a_ps256_token_is_refused_by_an_rs256_only_issuer_before_verification() -> None:
    world = await World("github").start()
    ps256 = Issuer(world.issuer.issuer, alg="PS256", kid=world.issuer.kid, key=world.issuer.key)
    token = ps256.mint("github")  # the issuer's own RSA key: the signature would verify
    err = await refusal(world, token)
    assert (err.error, err.outcome) == ("invalid_grant", "alg_not_allowed")
    assert err.description == "algorithm PS256 is not accepted by this connection (spec.algorithms: RS256)"
    assert world.fetcher.calls == 0  # refused before the issuer's keys were even fetched
    rs256 = await world.exchange.exchange(form(world.issuer.mint("github")))
    assert rs256.roles == ("team-a/deployer",)


async def test_a_connection_that_names_ps256_accepts_it() -> None:
    world = await World("github", algorithms=["RS256", "PS256"]).start()
    world.fetcher.document = {"keys": [{k: v for k, v in world.issuer.public_jwk().items() if k != "alg"}]}
    ps256 = Issuer(world.issuer.issuer, alg="PS256", kid=world.issuer.kid, key=world.issuer.key)
    assert (await world.exchange.exchange(form(ps256.mint("github")))).roles == ("team-a/deployer",)


# 5. 64 KiB subject tokens (a GitLab user in hundreds of groups), still bounded before decoding.
def gitlab_groups(n: int) -> list[str]:
    return [f"acme-corporation/engineering/platform-team-{i:03d}/service-{i:03d}" for i in range(n)]


async def test_a_gitlab_token_of_a_user_in_200_groups_is_exchanged() -> None:
    world = await World("gitlab").start()
    token = world.issuer.mint("gitlab", groups=gitlab_groups(200))
    assert 16 * 1024 < len(token) < 64 * 1024
    assert (await world.exchange.exchange(form(token))).roles == ("team-a/deployer",)


async def test_the_limit_is_64_kib_and_checked_before_decoding() -> None:
    world = await World("gitlab").start()
    at_limit = world.issuer.mint("gitlab", groups=gitlab_groups(760))
    assert len(at_limit) <= 64 * 1024
    assert (await world.exchange.exchange(form(at_limit))).roles == ("team-a/deployer",)
    over = "e" * (64 * 1024 + 1)  # not even a JWT: refused for its size before anything is parsed
    err = await refusal(world, over)
    assert (err.error, err.outcome) == ("invalid_request", "oversize")
    assert err.description == "subject_token is larger than 65536 bytes"


# 7. The broker over HTTP: no 500, the real reason, no ERROR log line.
@pytest.fixture
async def broker() -> AsyncIterator[tuple[Client, BrokerWorld]]:
    bw = await BrokerWorld().start()
    async with TestClient(TestServer(bw.app(), host="127.0.0.1")) as client:
        yield client, bw


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_broker_world_serves_every_endpoint(broker: tuple[Client, BrokerWorld]) -> None:
    http, bw = broker
    bearer = {"Authorization": f"Bearer {bw.access_token}"}
    resp = await http.post("/v1/ssh/sign", json=bw.ssh_body(), headers=bearer)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["principals"] == ["wl_deployer"]
    resp = await http.post("/v1/enroll", json=bw.enroll_body())
    assert resp.status == 200, await resp.text()
    resp = await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer)
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("path", ["/v1/ssh/sign", "/v1/enroll"])
@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"a":' * 12_000 + b"1" + b"}" * 12_000])
async def test_deeply_nested_json_is_a_400_naming_the_depth(
    broker: tuple[Client, BrokerWorld], caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    http, bw = broker
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bw.access_token}"}
    resp = await http.post(path, data=body, headers=headers)
    answer = await resp.json()
    assert resp.status == 400 and answer["error"] == "invalid_request"
    assert answer["error_description"] == "the body is not strict JSON: nested deeper than 32 levels"
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("ttl", ["forever", "999999999999999h", 300, "9" * 400 + "h", None])
async def test_a_bad_ttl_on_ssh_sign_is_invalid_request(
    broker: tuple[Client, BrokerWorld], caplog: pytest.LogCaptureFixture, ttl: Any
) -> None:
    http, bw = broker
    body = bw.ssh_body(ttl=ttl)
    resp = await http.post("/v1/ssh/sign", json=body, headers={"Authorization": f"Bearer {bw.access_token}"})
    answer = await resp.json()
    if ttl is None:
        assert resp.status == 200
        return
    assert resp.status == 400 and answer["error"] == "invalid_request", answer
    assert answer["error_description"].startswith("ttl")
    assert errors_logged(caplog) == []


async def test_more_than_1000_form_fields_is_named_as_such(
    broker: tuple[Client, BrokerWorld], caplog: pytest.LogCaptureFixture
) -> None:
    http, _ = broker
    body = "&".join(f"f{i}=v" for i in range(1001))
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    resp = await http.post("/v1/token", data=body, headers=headers)
    answer = await resp.json()
    assert resp.status == 400 and answer["error_description"] == "the form has more than 1000 fields"
    resp = await http.post("/v1/token", data="x=" + "a" * 80_000, headers=headers)
    assert (await resp.json())["error_description"] == "request body larger than 73728 bytes"
    assert errors_logged(caplog) == []


@pytest.mark.parametrize(
    ("path", "send", "fragment"),
    [
        ("/v1/token", {"data": b"grant_type=%ED%A0%80"}, "not valid (percent-encoded) UTF-8"),
        ("/v1/token", {"data": b"\xff=1"}, "not valid (percent-encoded) UTF-8"),
        ("/v1/token", {"data": b"k" * 5000 + b"=1&" + b"k" * 5000 + b"=2"}, "kkk... is repeated"),
        ("/v1/enroll", {"data": b'{"a": NaN}'}, "NaN is not a JSON number"),
        ("/v1/enroll", {"data": b'{"a": 1e999}'}, "too large to represent"),
        ("/v1/enroll", {"data": b'{"token": "\\ud800"}'}, "lone surrogate"),
        ("/v1/enroll", {"data": b"\xed\xa0\x80"}, "not valid UTF-8"),
        ("/v1/enroll", {"data": b"[1, 2"}, "not valid JSON"),
        ("/v1/enroll", {"data": b"[]"}, "the body must be a JSON object"),
    ],
)
async def test_every_parse_failure_is_a_4xx_with_the_reason(
    broker: tuple[Client, BrokerWorld],
    caplog: pytest.LogCaptureFixture,
    path: str,
    send: dict[str, Any],
    fragment: str,
) -> None:
    http, _ = broker
    content_type = "application/json" if path == "/v1/enroll" else "application/x-www-form-urlencoded"
    resp = await http.post(path, headers={"Content-Type": content_type}, **send)
    answer = await resp.json()
    assert resp.status == 400 and fragment in answer["error_description"], answer
    assert len(answer["error_description"]) < 200
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("endpoint", ["/v1/token", "/v1/token/validate"])
async def test_a_surrogate_claim_is_a_400_over_http_not_a_500(
    broker: tuple[Client, BrokerWorld], caplog: pytest.LogCaptureFixture, endpoint: str
) -> None:
    http, bw = broker
    claims = bw.world.issuer.claims("github", ref="refs/heads/\ud800")
    token = sign_raw(
        bw.world.issuer,
        json.dumps({"alg": "RS256", "kid": bw.world.issuer.kid}).encode(),
        json.dumps(claims).encode(),
    )
    resp = await http.post(endpoint, data=form(token))
    answer = await resp.json()
    if endpoint == "/v1/token":
        assert resp.status == 400 and answer["error"] == "invalid_grant", answer
        assert "lone surrogate" in answer["error_description"]
    else:
        assert (
            resp.status == 200
            and answer["verdict"] == "invalid"
            and answer["error"]["error"] == "invalid_grant"
        )
    assert errors_logged(caplog) == []
