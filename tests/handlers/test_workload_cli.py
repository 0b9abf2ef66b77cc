"""`kubepam workload login|explain` for CI jobs: ID tokens from each provider's own environment, the
exchange against a broker on loopback, and clear errors when something is missing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from kubepam.cli import main
from kubepam.client.id_tokens import TokenSourceError, id_token
from kubepam.handlers.broker import make_app
from tests.handlers.test_token_exchange import World
from tests.servers import LocalHTTP


def test_github_actions_token_is_requested_with_audience_and_bearer() -> None:
    seen: dict[str, Any] = {}

    def endpoint(req: Any) -> tuple[int, Any]:
        seen["path"], seen["auth"] = req.path, req.headers["Authorization"]
        return 200, {"value": "gh.jwt.token"}

    with LocalHTTP() as server:
        server.routes["/token"] = endpoint
        env = {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{server.url}/token?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-secret",
        }
        assert id_token("auto", env, audience="https://kubepam.example.com") == "gh.jwt.token"
    assert seen["auth"] == "bearer runner-secret"
    assert "audience=https%3A%2F%2Fkubepam.example.com" in seen["path"]


def test_gcp_metadata_server_is_asked_with_the_metadata_flavor_header() -> None:
    with LocalHTTP() as server:
        server.routes["/computeMetadata/v1/instance/service-accounts/default/identity"] = lambda req: (
            200 if req.headers.get("Metadata-Flavor") == "Google" else 403,
            b"gcp.jwt.token",
        )
        env = {"GCE_METADATA_HOST": server.url.removeprefix("http://")}
        assert id_token("gcp", env, audience="aud") == "gcp.jwt.token"


@pytest.mark.parametrize(
    ("provider", "env", "expected"),
    [
        ("gitlab", {"GITLAB_CI": "true", "KUBEPAM_ID_TOKEN": "gl.jwt.token"}, "gl.jwt.token"),
        ("circleci", {"CIRCLE_OIDC_TOKEN_V2": "cc.jwt.v2", "CIRCLE_OIDC_TOKEN": "cc.jwt.v1"}, "cc.jwt.v2"),
        ("auto", {"CIRCLE_OIDC_TOKEN": "cc.jwt.v1"}, "cc.jwt.v1"),
    ],
)
def test_env_based_providers(provider: str, env: dict[str, str], expected: str) -> None:
    assert id_token(provider, env) == expected


@pytest.mark.parametrize(
    ("provider", "env", "message"),
    [
        ("auto", {}, "no ID token source found"),
        ("github", {}, "id-token: write"),
        ("gitlab", {"GITLAB_CI": "true"}, "$KUBEPAM_ID_TOKEN is empty"),
        ("gcp", {}, "--audience is required"),
        ("file", {"KUBEPAM_ID_TOKEN_FILE": "/nonexistent/token"}, "cannot read token file"),
    ],
)
def test_missing_sources_say_what_to_set(provider: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(TokenSourceError, match=message.replace("$", r"\$")):
        id_token(provider, env)


@pytest.fixture
async def broker() -> AsyncIterator[tuple[str, World]]:
    world = await World("github").start()
    runtime = SimpleNamespace(exchange=world.exchange, signing=world.signing, directory=world.directory)
    server = TestServer(make_app(runtime), host="127.0.0.1")  # type: ignore[arg-type]
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), world
    finally:
        await server.close()


async def test_login_writes_the_access_token_to_a_private_file(
    broker: tuple[str, World], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, world = broker
    (tmp_path / "id").write_text(world.issuer.mint("github"))
    out = tmp_path / "access"
    code = await asyncio.to_thread(
        main,
        [
            "workload",
            "login",
            "--connection",
            "team-a/ci",
            "--broker",
            url,
            "--token-file",
            str(tmp_path / "id"),
            "-o",
            str(out),
        ],
    )
    assert code == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_text().count(".") == 2
    assert out.read_text().strip() not in capsys.readouterr().err


async def test_login_reports_the_broker_refusal(
    broker: tuple[str, World], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, world = broker
    (tmp_path / "id").write_text(world.issuer.mint("github", repository="evil/fork"))
    code = await asyncio.to_thread(
        main,
        [
            "workload",
            "login",
            "--connection",
            "team-a/ci",
            "--broker",
            url,
            "--token-file",
            str(tmp_path / "id"),
        ],
    )
    assert code == 1
    assert "invalid_grant: token does not meet the connection's conditions" in capsys.readouterr().err


async def test_explain_prints_the_trace(
    broker: tuple[str, World], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, world = broker
    (tmp_path / "id").write_text(world.issuer.mint("github", ref="refs/heads/dev"))
    code = await asyncio.to_thread(
        main,
        [
            "workload",
            "explain",
            "--connection",
            "team-a/ci",
            "--broker",
            url,
            "--token-file",
            str(tmp_path / "id"),
        ],
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "+ repository equals acme/payments  (token: acme/payments; matches)" in out
    assert "role team-a/deployer: no match - no block matches" in out
    assert "- ref equals refs/heads/main  (token: refs/heads/dev)" in out
    code = await asyncio.to_thread(
        main,
        [
            "workload",
            "explain",
            "--json",
            "--connection",
            "team-a/ci",
            "--broker",
            url,
            "--token-file",
            str(tmp_path / "id"),
        ],
    )
    assert json.loads(capsys.readouterr().out)["wouldIssue"] is False
