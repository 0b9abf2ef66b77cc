"""Property tests (Hypothesis) of the broker against hostile input: random bytes as subject tokens,
random JSON claim sets and random JOSE header members signed with the connection's own trusted key,
and random JSON (deep, wide, wrongly typed) posted to every endpoint. The broker answers 2xx/4xx only,
never 500 and never an ERROR log line, and issues an access token only when every check passed (an
oracle written from RFC 7519 and the connection's conditions says when that is).

Kept fast for the suite (a few hundred examples each); bench/fuzz_broker.py runs 100,000 inputs."""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubepam.domain.oauth import OAuthError
from tests.handlers.broker_world import BrokerWorld
from tests.handlers.test_token_exchange import World, form
from tests.tokens import AUDIENCE, ISSUERS, sign_raw

Client = TestClient[Any, Any]
FAST = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ISSUER = ISSUERS["github"]
REFUSALS = {400, 401, 403}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def outcome(world: World, token: str) -> int:
    """200 when a token was issued, else the refusal's status; anything but an OAuthError fails."""
    try:
        await world.exchange.exchange(form(token))
    except OAuthError as err:
        assert err.status in REFUSALS, err
        report = await world.exchange.validate(form(token))  # the dry run never raises for a bad token
        assert report["wouldIssue"] is False
        return err.status
    return 200


@pytest.fixture
async def world() -> World:
    return await World("github").start()


# 1. Random bytes and text as the subject token.
token_texts = (
    st.text(max_size=300)
    | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
    | st.tuples(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=100)).map(
        lambda parts: ".".join(b64(p) for p in parts)
    )
    | st.tuples(json_values, json_values).map(
        lambda hp: f"{b64(json.dumps(hp[0]).encode())}.{b64(json.dumps(hp[1]).encode())}.c2ln"
    )
)


@FAST
@given(token=token_texts)
async def test_random_subject_tokens_are_refused_never_a_server_error(world: World, token: str) -> None:
    if not token:
        return  # an empty subject_token is a missing parameter, tested elsewhere
    assert await outcome(world, token) in REFUSALS


# 2. Random claim sets signed with the trusted key: issued exactly when every check passes.
def times(now: int) -> st.SearchStrategy[Any]:
    offsets = st.sampled_from([-86_400, -3600, -90, -30, 30, 90, 3600, 86_400])  # never near a boundary
    return (
        offsets.map(lambda d: now + d)
        | offsets.map(lambda d: float(now + d) + 0.25)
        | offsets.map(lambda d: str(now + d))
        | st.sampled_from([True, False, None, [now], {"t": now}, 10**30, -(10**30), 1e300])
    )


def claim_sets(now: int) -> st.SearchStrategy[dict[str, Any]]:
    valid: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "repo:acme/payments:ref:refs/heads/main",
        "jti": "j-1",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "repository": "acme/payments",
        "ref": "refs/heads/main",
    }
    alternatives: dict[str, st.SearchStrategy[Any]] = {
        "iss": st.sampled_from([ISSUER, ISSUER + "/", "https://evil.example", [ISSUER], 1]) | json_values,
        "aud": st.sampled_from([AUDIENCE, [AUDIENCE], ["x", AUDIENCE], [], ["x"], [AUDIENCE, 1], 5])
        | json_values,
        "sub": st.sampled_from(["s", 1224344, None, ["s"]]) | json_values,
        "jti": st.sampled_from(["j", 7, None]) | json_values,
        "iat": times(now),
        "nbf": times(now),
        "exp": times(now),
        "repository": st.sampled_from(["acme/payments", ["acme/payments"], "evil/fork", 1, True, None])
        | json_values,
        "ref": st.sampled_from(["refs/heads/main", ["x", "refs/heads/main"], "refs/heads/dev", 0])
        | json_values,
    }

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        claims: dict[str, Any] = {}
        for name, good in valid.items():
            choice = draw(st.sampled_from(["keep", "keep", "drop", "change"]))
            if choice == "keep":
                claims[name] = good
            elif choice == "change":
                claims[name] = draw(alternatives[name])
        claims.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4)))
        return claims

    return build()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text_matches(value: Any, wanted: str) -> bool:
    """The equals operator: strings as they are, any element of a list (ints and booleans as text)."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, (int, str)):
            text = str(item)
        else:
            continue
        if text == wanted:
            return True
    return False


def should_issue(claims: dict[str, Any], now: float) -> bool:
    """RFC 7519 as kubepam applies it, plus the connection's condition and the role's, independently."""
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _number(claims[name]):
            return False
    if "exp" not in claims or int(claims["exp"]) <= now - 60:
        return False
    if any(name in claims and int(claims[name]) > now + 60 for name in ("nbf", "iat")):
        return False
    if any(name in claims and not isinstance(claims[name], str) for name in ("iss", "sub", "jti")):
        return False
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if not all(isinstance(a, str) for a in auds) or AUDIENCE not in auds:
        return False
    return (
        claims.get("iss") == ISSUER
        and "repository" in claims
        and _text_matches(claims["repository"], "acme/payments")
        and "ref" in claims
        and _text_matches(claims["ref"], "refs/heads/main")
    )


@FAST
@given(data=st.data())
async def test_random_claim_sets_are_issued_only_when_every_check_passes(
    world: World, data: st.DataObject
) -> None:
    now = int(time.time())
    claims = data.draw(claim_sets(now))
    header = {"alg": "RS256", "typ": "JWT", "kid": world.issuer.kid}
    token = sign_raw(world.issuer, json.dumps(header).encode(), json.dumps(claims).encode())
    status = await outcome(world, token)
    assert (status == 200) == should_issue(claims, time.time()), (status, claims)


# 3. Random JOSE header members, signed (RS256) with the trusted key.
@st.composite
def headers(draw: st.DrawFn, kid: str) -> dict[str, Any]:
    header: dict[str, Any] = {}
    alg = draw(
        st.sampled_from(["RS256", "RS256", "PS256", "ES256", "HS256", "none", "None", "", "EdDSA"])
        | json_values
    )
    if draw(st.booleans()) or alg != "RS256":
        header["alg"] = alg
    else:
        header["alg"] = "RS256"
    kid_choice = draw(st.sampled_from(["ours", "ours", "absent", "null", "other"]))
    if kid_choice == "ours":
        header["kid"] = kid
    elif kid_choice == "null":
        header["kid"] = None
    elif kid_choice == "other":
        header["kid"] = draw(json_values)
    for member in draw(
        st.lists(st.sampled_from(["typ", "crit", "b64", "jku", "x5u", "cty", "zip", "x"]), max_size=3)
    ):
        header[member] = draw(json_values)
    return header


@FAST
@given(data=st.data())
async def test_random_header_members_never_bypass_the_rules(world: World, data: st.DataObject) -> None:
    header = data.draw(headers(world.issuer.kid))
    token = sign_raw(
        world.issuer, json.dumps(header).encode(), json.dumps(world.issuer.claims("github")).encode()
    )
    status = await outcome(world, token)
    acceptable = (
        header.get("alg") == "RS256"
        and header.get("kid", world.issuer.kid) == world.issuer.kid
        and "crit" not in header
        and header.get("b64", True) is not False
    )
    assert (status == 200) == acceptable, (status, header)


# 4. Random JSON to every endpoint over HTTP: 2xx/4xx only, no ERROR log line.
@pytest.fixture
async def broker() -> AsyncIterator[tuple[Client, BrokerWorld]]:
    bw = await BrokerWorld().start()
    async with TestClient(TestServer(bw.app(), host="127.0.0.1")) as client:
        yield client, bw


SSH_FIELDS = ["role", "project", "server", "publicKey", "ttl"]
ENROLL_FIELDS = ["namespace", "project", "token", "hostname", "os", "labels", "addresses"]
CHECKOUT_FIELDS = ["role", "project", "account", "duration", "reason"]


@st.composite
def bodies(draw: st.DrawFn, bw: BrokerWorld) -> bytes:
    kind = draw(st.sampled_from(["random", "deep", "wide", "fields", "fields", "almost"]))
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=20, max_value=20_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = "1" if opener != "[" else ""
        return (opener * depth + inner + closer * depth * draw(st.sampled_from([0, 1]))).encode()
    if kind == "wide":
        n = draw(st.integers(min_value=100, max_value=3000))
        return json.dumps({f"k{i}": i for i in range(n)} if draw(st.booleans()) else list(range(n))).encode()
    if kind == "almost":
        base = draw(st.sampled_from([bw.ssh_body(), bw.enroll_body(), bw.checkout_body()]))
        key = draw(st.sampled_from(sorted(base)))
        return json.dumps({**base, key: draw(json_values)}).encode()
    names = draw(st.sampled_from([SSH_FIELDS, ENROLL_FIELDS, CHECKOUT_FIELDS]))
    return json.dumps(draw(st.fixed_dictionaries({}, optional={n: json_values for n in names}))).encode()


ENDPOINTS = ["/v1/token", "/v1/token/validate", "/v1/ssh/sign", "/v1/enroll", "/v1/checkouts"]


@settings(FAST, max_examples=300)
@given(data=st.data())
async def test_random_json_to_every_endpoint_is_never_a_server_error(
    broker: tuple[Client, BrokerWorld], caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    http, bw = broker
    caplog.set_level(logging.INFO)
    path = data.draw(st.sampled_from(ENDPOINTS))
    body = data.draw(bodies(bw))
    headers = {
        "Content-Type": data.draw(st.sampled_from(["application/json", "application/x-www-form-urlencoded"]))
    }
    if data.draw(st.booleans()):
        headers["Authorization"] = "Bearer " + bw.access_token
    resp = await http.post(path, data=body, headers=headers)
    answer = await resp.json()
    assert resp.status < 500, (path, resp.status, answer, body[:200])
    if resp.status >= 400:
        assert set(answer) == {"error", "error_description"} and len(answer["error_description"]) < 400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@st.composite
def forms(draw: st.DrawFn, token: str) -> dict[str, str]:
    fields = draw(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=6))
    if draw(st.booleans()):
        fields = {**form(token), **fields}
    return fields


@settings(FAST, max_examples=150)
@given(data=st.data())
async def test_random_forms_to_the_token_endpoints_are_never_a_server_error(
    broker: tuple[Client, BrokerWorld], caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    http, bw = broker
    fields = data.draw(forms(bw.world.issuer.mint("github")))
    body = urllib.parse.urlencode(fields)
    for path in ("/v1/token", "/v1/token/validate"):
        resp = await http.post(path, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status in {200, 400, 401, 403}, (path, resp.status, await resp.text())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
