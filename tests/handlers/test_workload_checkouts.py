"""Workload checkouts through the broker, against fakes (the real checkout service reconciles each
Checkout the broker creates): the credential is returned once, a held account is refused naming its
holder, only the token's own checkouts can be read or checked in, bodies are checked field by field,
a token whose connection was demoted is refused, and no token or password reaches a log line; and
`kubepam workload checkout|checkin` for jobs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepam.adapters.kube import KubeError
from kubepam.cli import main
from kubepam.domain.connection import Phase
from kubepam.handlers.broker import make_app
from kubepam.services.checkouts import credential_secret_name
from kubepam.services.workload_checkouts import DELIVERED, TOKEN_ID
from tests.handlers.broker_world import ACCOUNT, NS, OTHER_ACCOUNT, PROJECT, BrokerWorld

Client = TestClient[Any, Any]


@pytest.fixture
async def broker() -> AsyncIterator[tuple[Client, BrokerWorld]]:
    bw = await BrokerWorld().start()
    async with TestClient(TestServer(bw.app(), host="127.0.0.1")) as client:
        yield client, bw


def bearer(bw: BrokerWorld) -> dict[str, str]:
    return {"Authorization": f"Bearer {bw.access_token}"}


def subject(bw: BrokerWorld) -> str:
    return str(jwt.decode(bw.access_token, options={"verify_signature": False})["sub"])


def checkouts(bw: BrokerWorld) -> list[dict[str, Any]]:
    return [obj for (plural, _, _), obj in bw.objects.items.items() if plural == "checkouts"]


async def phase_becomes(http: Client, bw: BrokerWorld, name: str, phase: str) -> dict[str, Any]:
    for _ in range(100):
        resp = await http.get(f"/v1/checkouts/{NS}/{name}", headers=bearer(bw))
        body: dict[str, Any] = await resp.json()
        if body.get("phase") == phase:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(body)


async def test_the_credential_is_returned_once_and_check_in_ends_the_checkout(
    broker: tuple[Client, BrokerWorld],
) -> None:
    http, bw = broker
    resp = await http.post("/v1/checkouts", json=bw.checkout_body(duration="10m"), headers=bearer(bw))
    answer = await resp.json()
    assert resp.status == 201, answer
    assert resp.headers["Cache-Control"] == "no-store"
    name = answer["checkout"]
    assert name.startswith("wl-") and answer["namespace"] == NS and answer["account"] == ACCOUNT
    obj = bw.objects.items[("checkouts", NS, name)]
    stored = bw.secrets.items[(NS, credential_secret_name(name, obj["metadata"]["uid"]))]
    assert answer["credential"] == {k: v.decode() for k, v in stored.data.items()}
    assert answer["credential"]["username"] == ACCOUNT and len(answer["credential"]["password"]) >= 16
    assert answer["expiresAt"] == obj["status"]["expiresAt"]

    # a normal Checkout: the token's subject as requester, judged as the workload role, no groups
    assert obj["spec"]["requester"] == subject(bw) and subject(bw).startswith("workload:team-a/ci:")
    assert obj["spec"]["workloadRole"] == "deployer" and "groups" not in obj["spec"]
    assert obj["status"]["holder"] == subject(bw) and obj["status"]["message"].endswith(
        "under workloads/accounts"
    )
    assert obj["metadata"]["annotations"][TOKEN_ID] and obj["metadata"]["annotations"][DELIVERED]
    assert bw.rbac.readers == {}  # no Role for a Kubernetes user that does not exist

    again = await http.post(f"/v1/checkouts/{NS}/{name}/credential", headers=bearer(bw))
    refused = await again.json()
    assert again.status == 403 and refused["error"] == "access_denied"
    assert "it is returned once" in refused["error_description"]

    seen = await (await http.get(f"/v1/checkouts/{NS}/{name}", headers=bearer(bw))).json()
    assert seen["phase"] == "Active" and seen["credentialDelivered"] is True and "credential" not in seen

    resp = await http.delete(f"/v1/checkouts/{NS}/{name}", headers=bearer(bw))
    body = await resp.json()
    assert resp.status == 202 and body["checkinRequested"] is True, body
    assert bw.objects.items[("checkouts", NS, name)]["spec"]["checkin"] == {"requested": True}
    await phase_becomes(http, bw, name, "CheckedIn")
    assert (NS, credential_secret_name(name, obj["metadata"]["uid"])) not in bw.secrets.items
    resp = await http.delete(f"/v1/checkouts/{NS}/{name}", headers=bearer(bw))  # again: nothing to do
    assert resp.status == 202 and (await resp.json())["checkinRequested"] is False


async def test_a_held_account_is_refused_naming_its_holder_and_the_denial_stays(
    broker: tuple[Client, BrokerWorld],
) -> None:
    http, bw = broker
    first = await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer(bw))
    assert first.status == 201
    second = await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer(bw))
    answer = await second.json()
    assert second.status == 403 and answer["error"] == "access_denied", answer
    assert f"account {ACCOUNT} is checked out by {subject(bw)}" in answer["error_description"]
    assert "credential" not in answer
    denied = [o for o in checkouts(bw) if (o.get("status") or {}).get("phase") == "Denied"]
    assert len(denied) == 1 and denied[0]["metadata"]["name"] in answer["error_description"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"account": OTHER_ACCOUNT}, f"account {OTHER_ACCOUNT} is not listed"),
        ({"project": "nope"}, f"no Project {NS}/nope"),
        ({"account": "nobody"}, f"project {PROJECT} has no shared account nobody"),
    ],
)
async def test_what_no_rule_grants_is_denied_with_the_checkouts_message(
    broker: tuple[Client, BrokerWorld], overrides: dict[str, Any], fragment: str
) -> None:
    http, bw = broker
    resp = await http.post("/v1/checkouts", json=bw.checkout_body(**overrides), headers=bearer(bw))
    answer = await resp.json()
    assert resp.status == 403 and answer["error"] == "access_denied", answer
    assert fragment in answer["error_description"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"role": None}, 400, "role is required"),
        ({"role": "other"}, 403, "the access token does not carry role other"),
        ({"role": "elsewhere/deployer"}, 403, "does not carry role elsewhere/deployer"),
        ({"project": None}, 400, "project is required"),
        ({"account": 5}, 400, "account is required (a non-empty string)"),
        ({"account": "a" * 64}, 400, "account is longer than 63 characters"),
        ({"reason": ""}, 400, "reason is required"),
        ({"reason": "x" * 1025}, 400, "reason is longer than 1024 characters"),
        ({"duration": 600}, 400, "duration is required (a non-empty string)"),
        ({"duration": "forever"}, 400, "duration: 'forever' is not a duration"),
        ({"duration": "48h"}, 400, "duration must be between 10s and 24h"),
        ({"duration": "1s"}, 400, "duration must be between 10s and 24h"),
        ({"requester": "alice"}, 400, "unknown field requester"),
        ({"workloadRole": "admin"}, 400, "unknown field workloadRole"),
    ],
)
async def test_bodies_are_checked_before_anything_is_created(
    broker: tuple[Client, BrokerWorld], body: dict[str, Any], status: int, fragment: str
) -> None:
    http, bw = broker
    sent = {k: v for k, v in bw.checkout_body(**body).items() if v is not None}
    resp = await http.post("/v1/checkouts", json=sent, headers=bearer(bw))
    answer = await resp.json()
    assert resp.status == status and fragment in answer["error_description"], answer
    assert set(answer) == {"error", "error_description"}
    assert checkouts(bw) == []


async def test_a_body_that_is_not_a_json_object_is_invalid_request(
    broker: tuple[Client, BrokerWorld],
) -> None:
    http, bw = broker
    for data, content_type in ((b"[1]", "application/json"), (b"role=deployer", "text/plain")):
        resp = await http.post(
            "/v1/checkouts", data=data, headers={**bearer(bw), "Content-Type": content_type}
        )
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"


async def test_tokens_are_required_and_a_demoted_connection_is_refused(
    broker: tuple[Client, BrokerWorld],
) -> None:
    http, bw = broker
    resp = await http.post("/v1/checkouts", json=bw.checkout_body())
    assert resp.status == 401 and (await resp.json())["error"] == "invalid_token"
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    first = await (await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer(bw))).json()

    entries = bw.world.directory.entries  # a security admin demotes the connection to Draft
    entries[(NS, "ci")] = replace(entries[(NS, "ci")], phase=Phase.DRAFT)
    for method, path in (
        ("POST", "/v1/checkouts"),
        ("GET", f"/v1/checkouts/{NS}/{first['checkout']}"),
        ("DELETE", f"/v1/checkouts/{NS}/{first['checkout']}"),
        ("POST", f"/v1/checkouts/{NS}/{first['checkout']}/credential"),
    ):
        resp = await http.request(method, path, json=bw.checkout_body(), headers=bearer(bw))
        answer = await resp.json()
        assert resp.status == 401 and answer["error"] == "invalid_token", (path, answer)
        assert "WorkloadConnection team-a/ci is no longer Active" in answer["error_description"]
    assert len(checkouts(bw)) == 1
    assert "checkin" not in bw.objects.items[("checkouts", NS, first["checkout"])]["spec"]


@pytest.mark.parametrize("requester", ["alice", "workload:team-a/ci:repo:acme/other:ref:refs/heads/main"])
async def test_only_the_tokens_own_checkouts_are_read_or_checked_in(
    broker: tuple[Client, BrokerWorld], requester: str
) -> None:
    """Someone else's checkout answers exactly as a missing one: 404, nothing changed."""
    http, bw = broker
    bw.objects.add(
        "checkouts",
        {
            "metadata": {"name": "theirs", "namespace": NS, "resourceVersion": "1"},
            "spec": {"project": PROJECT, "account": ACCOUNT, "requester": requester, "reason": "r"},
            "status": {"phase": "Active"},
        },
    )
    answers = []
    for name in ("theirs", "missing"):
        for method, path in (
            ("GET", f"/v1/checkouts/{NS}/{name}"),
            ("DELETE", f"/v1/checkouts/{NS}/{name}"),
            ("POST", f"/v1/checkouts/{NS}/{name}/credential"),
        ):
            resp = await http.request(method, path, headers=bearer(bw))
            body = await resp.json()
            assert resp.status == 404 and body["error"] == "not_found", body
            answers.append(body["error_description"].replace(name, "X"))
    assert answers[:3] == answers[3:]
    assert "checkin" not in bw.objects.items[("checkouts", NS, "theirs")]["spec"]
    resp = await http.get("/v1/checkouts/NOT_A_NAME/x..", headers=bearer(bw))
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_a_checkout_not_decided_in_time_is_a_503_naming_it_and_its_credential_comes_later(
    broker: tuple[Client, BrokerWorld],
) -> None:
    _, bw = broker
    runtime = bw.runtime()
    runtime.workload_checkouts = bw.workload_checkouts(wait=0.3)
    bw.objects.on_spec = None  # the operator is busy: nothing decides for now
    async with TestClient(TestServer(make_app(runtime), host="127.0.0.1")) as http:  # type: ignore[arg-type]
        resp = await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer(bw))
        answer = await resp.json()
        assert resp.status == 503 and answer["error"] == "temporarily_unavailable", answer
        assert resp.headers["Retry-After"] == "5"
        name = answer["checkout"]
        assert answer["namespace"] == NS and answer["phase"] == "Pending"
        assert f"POST /v1/checkouts/{NS}/{name}/credential" in answer["error_description"]
        await bw.checkouts.reconcile(NS, name)  # the operator gets to it
        resp = await http.post(f"/v1/checkouts/{NS}/{name}/credential", headers=bearer(bw))
        late = await resp.json()
        assert resp.status == 200 and late["credential"]["username"] == ACCOUNT, late
        resp = await http.post(f"/v1/checkouts/{NS}/{name}/credential", headers=bearer(bw))
        assert resp.status == 403 and (await resp.json())["error"] == "access_denied"


async def test_two_hand_outs_racing_deliver_the_credential_once(broker: tuple[Client, BrokerWorld]) -> None:
    _, bw = broker
    bw.objects.on_spec = None
    service = bw.workload_checkouts(wait=0.2)
    claims = bw.runtime().access.verify(f"Bearer {bw.access_token}")
    with pytest.raises(Exception, match="Pending"):
        await service.checkout(claims, bw.checkout_body())
    (obj,) = checkouts(bw)
    await bw.checkouts.reconcile(NS, obj["metadata"]["name"])
    results = await asyncio.gather(
        *(service.credential(claims, NS, obj["metadata"]["name"]) for _ in range(4)), return_exceptions=True
    )
    delivered = [r for r in results if isinstance(r, dict)]
    assert len(delivered) == 1 and delivered[0]["credential"]["username"] == ACCOUNT, results


@pytest.mark.parametrize(
    ("refusal", "status", "fragment"),
    [
        (KubeError(403, "Forbidden", '{"message": "checkouts.kubepam.io is forbidden"}'), 403, "opted in"),
        (
            KubeError(422, "Invalid", '{"message": "spec.reason: Too long"}'),
            400,
            "the API server refused the checkout: spec.reason: Too long",
        ),
        (KubeError(500, "InternalError", "etcd"), 503, "did not take the checkout (500)"),
    ],
)
async def test_api_server_refusals_are_named(
    broker: tuple[Client, BrokerWorld], refusal: KubeError, status: int, fragment: str
) -> None:
    http, bw = broker
    bw.objects.refuse_create = refusal
    resp = await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer(bw))
    answer = await resp.json()
    assert resp.status == status and fragment in answer["error_description"], answer


async def test_no_token_or_password_in_any_log_line(
    broker: tuple[Client, BrokerWorld], caplog: pytest.LogCaptureFixture
) -> None:
    http, bw = broker
    caplog.set_level(logging.DEBUG)
    answer = await (await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer(bw))).json()
    await http.post("/v1/checkouts", json=bw.checkout_body(), headers=bearer(bw))  # denied: held
    await http.delete(f"/v1/checkouts/{NS}/{answer['checkout']}", headers=bearer(bw))
    await phase_becomes(http, bw, answer["checkout"], "CheckedIn")
    password = answer["credential"]["password"]
    signature = bw.access_token.rsplit(".", 1)[1]
    logged = caplog.text + "".join(str(e) for e in bw.events.seen)
    assert f"workload checkout {NS}/{answer['checkout']}" in caplog.text
    assert password not in logged and signature not in logged and bw.access_token not in logged
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# `kubepam workload checkout|checkin` against the broker on loopback.
@pytest.fixture
async def broker_url() -> AsyncIterator[tuple[str, BrokerWorld]]:
    bw = await BrokerWorld().start()
    server = TestServer(bw.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), bw
    finally:
        await server.close()


async def test_cli_checks_out_into_a_private_file_and_checks_in(
    broker_url: tuple[str, BrokerWorld],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, bw = broker_url
    (tmp_path / "access").write_text(bw.access_token + "\n")
    out = tmp_path / "credential.json"
    args = ["workload", "checkout", "--broker", url, "--access-token-file", str(tmp_path / "access")]
    args += ["--role", "deployer", "--project", PROJECT, "--account", ACCOUNT, "--reason", "deploy 42"]
    code = await asyncio.to_thread(main, [*args, "--duration", "5m", "-o", str(out)])
    assert code == 0
    assert out.stat().st_mode & 0o777 == 0o600
    answer = json.loads(out.read_text())
    err = capsys.readouterr().err
    assert answer["credential"]["password"] not in err and bw.access_token not in err
    held = f"{NS}/{answer['checkout']}"
    assert f"kubepam workload checkin --checkout {held}" in err

    code = await asyncio.to_thread(main, args)  # held: refused, naming the holder
    assert code == 1 and "is checked out by workload:team-a/ci:" in capsys.readouterr().err

    monkeypatch.setenv("KUBEPAM_ACCESS_TOKEN", bw.access_token)
    code = await asyncio.to_thread(main, ["workload", "checkin", "--broker", url, "--checkout", held])
    assert code == 0 and f"{held}: check-in requested" in capsys.readouterr().err
    obj = bw.objects.items[("checkouts", NS, answer["checkout"])]
    assert obj["spec"]["checkin"] == {"requested": True}


async def test_cli_prints_the_credential_as_json_and_says_what_is_missing(
    broker_url: tuple[str, BrokerWorld], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bw = broker_url
    monkeypatch.delenv("KUBEPAM_ACCESS_TOKEN", raising=False)
    base = ["workload", "checkout", "--broker", url]
    assert await asyncio.to_thread(main, base) == 2
    assert "set --access-token-file or KUBEPAM_ACCESS_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("KUBEPAM_ACCESS_TOKEN", bw.access_token)
    assert await asyncio.to_thread(main, [*base, "--role", "deployer"]) == 2
    assert "--project, --account, --reason required" in capsys.readouterr().err
    args = [*base, "--role", "deployer", "--project", PROJECT, "--account", ACCOUNT, "--reason", "r"]
    assert await asyncio.to_thread(main, args) == 0
    assert json.loads(capsys.readouterr().out)["credential"]["username"] == ACCOUNT
    assert await asyncio.to_thread(main, ["workload", "checkin", "--broker", url, "--checkout", "x"]) == 2
    assert await asyncio.to_thread(main, ["workload", "login", "--broker", url]) == 2
    assert "--connection" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("requester", "phase"), [("workload:team-a/ci:repo:acme/payments", "Denied"), ("alice", "Pending")]
)
async def test_a_workload_checkout_is_not_kept_waiting_for_a_project_applied_with_it(
    broker: tuple[Client, BrokerWorld], requester: str, phase: str
) -> None:
    """A person's checkout applied with its Project waits for it; the broker's is answered at once."""
    _, bw = broker
    bw.objects.add(
        "checkouts",
        {
            "metadata": {
                "name": "new",
                "namespace": NS,
                "resourceVersion": "1",
                "creationTimestamp": bw.world.clock().isoformat(),
            },
            "spec": {
                "project": "coming",
                "account": ACCOUNT,
                "requester": requester,
                "workloadRole": "deployer",
                "reason": "r",
            },
        },
    )
    await bw.checkouts.reconcile(NS, "new")
    status = bw.objects.items[("checkouts", NS, "new")]["status"]
    assert status.get("phase", "Pending") == phase and f"no Project {NS}/coming" in status["message"]
