"""The broker over HTTP (aiohttp, loopback): RFC 6749 error bodies, form rules, no stack traces or
token text in answers or logs, JWKS and metrics endpoints."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepam.adapters import metrics
from kubepam.domain.oauth import GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from kubepam.handlers.broker import make_app
from tests.handlers.test_token_exchange import World, form


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], World]]:
    world = await World("github", record=metrics.record_token_outcome).start()
    runtime = SimpleNamespace(exchange=world.exchange, signing=world.signing, directory=world.directory)
    async with TestClient(TestServer(make_app(runtime), host="127.0.0.1")) as test_client:  # type: ignore[arg-type]
        yield test_client, world


async def test_token_endpoint_issues_with_no_store(client: tuple[TestClient[Any, Any], World]) -> None:
    http, world = client
    resp = await http.post("/v1/token", data=form(world.issuer.mint("github")))
    body = await resp.json()
    assert resp.status == 200, body
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert resp.headers["Cache-Control"] == "no-store"


async def test_errors_are_rfc6749_bodies(client: tuple[TestClient[Any, Any], World]) -> None:
    http, world = client
    resp = await http.post(
        "/v1/token", data={**form(world.issuer.mint("github")), "connection": "team-a/nope"}
    )
    assert resp.status == 401
    assert await resp.json() == {
        "error": "invalid_client",
        "error_description": "no WorkloadConnection team-a/nope",
    }
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("send", "fragment"),
    [
        ({"json": {"grant_type": GRANT_TYPE_TOKEN_EXCHANGE}}, "application/x-www-form-urlencoded"),
        (
            {
                "data": "grant_type=a&grant_type=b",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            "parameter grant_type is repeated",
        ),
        ({"data": {"subject_token": "x" * 80_000}}, "request body larger than 73728 bytes"),
    ],
)
async def test_malformed_requests_are_invalid_request(
    client: tuple[TestClient[Any, Any], World], send: dict[str, Any], fragment: str
) -> None:
    http, _ = client
    resp = await http.post("/v1/token", **send)
    body = await resp.json()
    assert resp.status == 400 and body["error"] == "invalid_request" and fragment in body["error_description"]


async def test_hostile_token_leaves_no_trace_in_answer_or_logs(
    client: tuple[TestClient[Any, Any], World], caplog: pytest.LogCaptureFixture
) -> None:
    http, world = client
    token = world.issuer.mint("github", aud="https://elsewhere.example")
    caplog.set_level(logging.DEBUG)
    resp = await http.post("/v1/token", data=form(token))
    text = await resp.text()
    assert resp.status == 400 and '"wrong_aud"' not in text and "invalid_grant" in text
    signature = token.rsplit(".", 1)[1]
    assert token not in text and signature not in caplog.text and token.split(".")[1] not in caplog.text
    assert "Traceback" not in text


async def test_validate_endpoint_and_jwks_and_metrics(client: tuple[TestClient[Any, Any], World]) -> None:
    http, world = client
    token = world.issuer.mint("github")
    report = await (await http.post("/v1/token/validate", data=form(token))).json()
    assert report["verdict"] == "valid" and report["matchedRoles"] == ["team-a/deployer"]
    jwks = await (await http.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [world.signing.active.record.kid]
    before = metrics.TOKEN_REQUESTS.labels(endpoint="token", outcome="issued")._value.get()
    await http.post("/v1/token", data=form(token))
    exposition = await (await http.get("/metrics")).text()
    line = 'kubepam_token_requests_total{endpoint="token",outcome="issued"} ' + f"{before + 1:.1f}"
    assert line in exposition
    assert (await http.get("/healthz")).status == 200
    assert (await http.get("/readyz")).status == 200


async def test_subject_token_type_must_be_jwt(client: tuple[TestClient[Any, Any], World]) -> None:
    http, world = client
    resp = await http.post(
        "/v1/token", data={**form(world.issuer.mint("github")), "subject_token_type": TOKEN_TYPE_JWT + "x"}
    )
    assert (await resp.json())["error"] == "invalid_request"
