"""The broker's side of `kubepam agent` over HTTP (docs/agent-protocol.md): enrollment with a CSR, the
signed requests (KubepamAgent JWT with x5c) and every refusal, renewal and re-keying, the desired
accounts with their ETag and long poll, login events, the heartbeat, and the AgentSilent deadline."""

from __future__ import annotations

import asyncio
import base64
import copy
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from kubepam.adapters.agent_auth import agent_uri, spki_fingerprint
from kubepam.adapters.ca import random_serial, sign_client_csr
from kubepam.domain.certificates import validity
from kubepam.domain.conditions import condition_status
from kubepam.domain.policy import parse_policy
from kubepam.domain.project import parse_project
from kubepam.domain.server_access import IssuedLogin
from kubepam.handlers.broker import make_app
from kubepam.services.agents import (
    AgentService,
    Changes,
    ServerHealth,
    ServerRecord,
    namespace_scope,
    server_scope,
)
from kubepam.services.enrollment import Enroller
from kubepam.services.projects import CAStore, EnrollmentTokens, enrollment_secret_name
from tests.handlers.broker_world import ApiObjects
from tests.handlers.fakes import Clock, FakeEvents, FakeSecrets

NS = "team-a"
PROJECT, PROJECT_UID = "web", "web-uid"
OTHER, OTHER_UID = "db", "db-uid"

Client = TestClient[Any, Any]


class MergeObjects(ApiObjects):
    """Status patches merged as the API server merges them (nested objects too), and counted."""

    def __init__(self) -> None:
        super().__init__()
        self.status_patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, status: Any) -> None:
        self.status_patches.append((name, copy.deepcopy(dict(status))))
        obj = self.items[(plural, namespace, name)]

        def merge(into: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
            for key, value in patch.items():
                if value is None:
                    into.pop(key, None)
                elif isinstance(value, Mapping) and isinstance(into.get(key), dict):
                    merge(into[key], value)
                else:
                    into[key] = copy.deepcopy(value)
            return into

        obj["status"] = merge(dict(obj.get("status") or {}), status)
        self._bump(obj)


class AgentDirectory:
    """The broker's indexes, read straight from the objects (an index that is never behind)."""

    def __init__(self, objects: MergeObjects) -> None:
        self.objects = objects
        self.policy_list: list[Any] = []
        self.logins: list[tuple[str, str, IssuedLogin]] = []

    def server_record(self, namespace: str, name: str) -> ServerRecord | None:
        obj = self.objects.items.get(("servers", namespace, name))
        if obj is None:
            return None
        agent = (obj.get("status") or {}).get("agent") or {}
        meta = obj["metadata"]
        return ServerRecord(
            namespace,
            name,
            meta["uid"],
            obj["spec"]["project"],
            dict(meta.get("labels") or {}),
            str(agent.get("keyFingerprint") or ""),
        )

    def policies(self, namespace: str) -> list[Any]:
        return [p for p in self.policy_list if p.namespace == namespace]

    def issued_logins(self, namespace: str, server: str) -> list[IssuedLogin]:
        return [login for ns, name, login in self.logins if (ns, name) == (namespace, server)]


class Agent:
    """One machine's agent: its key, its certificate, and signed requests."""

    def __init__(self, hostname: str, key: Any = None) -> None:
        self.hostname = hostname
        self.key = key or ed25519.Ed25519PrivateKey.generate()
        self.certificate = ""

    def csr(self, key: Any = None) -> str:
        key = key or self.key
        algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.hostname)]))
            .sign(key, algorithm)
        )
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def token(self, method: str, target: str, now: datetime, **claims: Any) -> str:
        cert = x509.load_pem_x509_certificate(self.certificate.encode())
        der = cert.public_bytes(serialization.Encoding.DER)
        iat = int(now.timestamp())
        body = {
            "htm": method,
            "htu": target,
            "iat": iat,
            "exp": iat + 60,
            "jti": secrets.token_hex(16),
            **claims,
        }
        alg = "EdDSA" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "ES256"
        return jwt.encode(body, self.key, algorithm=alg, headers={"x5c": [base64.b64encode(der).decode()]})


class World:
    def __init__(self) -> None:
        self.clock = Clock(datetime.now(UTC).replace(microsecond=0))
        self.cas = CAStore(FakeSecrets(), FakeSecrets(), self.clock)
        self.enroll_secrets = FakeSecrets()
        self.tokens = EnrollmentTokens(self.enroll_secrets)
        self.objects = MergeObjects()
        self.directory = AgentDirectory(self.objects)
        self.events = FakeEvents()
        self.changes = Changes()
        self.agents = AgentService(
            self.directory,
            self.cas,
            self.objects,
            self.events,
            self.clock,
            changes=self.changes,
            recheck=30.0,  # only a bump (or the end of wait) ends a held poll
        )
        self.enroller = Enroller(
            self.tokens,
            self.cas,
            self.objects,
            lambda ns, name: {(NS, PROJECT): PROJECT_UID, (NS, OTHER): OTHER_UID}.get((ns, name)),
            self.clock,
            self.agents,
        )
        self.directory.policy_list = [
            parse_policy(
                NS,
                "ops-access",
                {
                    "principals": {"users": ["alice"], "workloadRoles": ["deployer"]},
                    "rules": [
                        {
                            "name": "servers",
                            "projects": [PROJECT],
                            "servers": {"matchLabels": {"role": "web"}},
                            "sshCertificate": {"sudo": True},
                        }
                    ],
                },
            )
        ]
        self.token = ""
        self.other_token = ""

    async def start(self) -> World:
        for name, uid in ((PROJECT, PROJECT_UID), (OTHER, OTHER_UID)):
            spec = replace(parse_project({}), uid=uid)
            await self.cas.reconcile(NS, name, uid, spec)
            await self.tokens.reconcile(NS, name, uid, spec)
        self.token = (
            self.enroll_secrets.items[(NS, enrollment_secret_name(PROJECT, PROJECT_UID))]
            .data["token"]
            .decode()
        )
        self.other_token = (
            self.enroll_secrets.items[(NS, enrollment_secret_name(OTHER, OTHER_UID))].data["token"].decode()
        )
        return self

    def enroll_body(self, agent: Agent, **kw: Any) -> dict[str, Any]:
        return {
            "namespace": NS,
            "project": PROJECT,
            "token": self.token,
            "hostname": agent.hostname,
            "os": "linux",
            "labels": {"role": "web"},
            "addresses": ["10.0.0.5"],
            "csr": agent.csr(),
            "agentVersion": "0.1.0",
            **kw,
        }

    def server(self, name: str) -> dict[str, Any]:
        return self.objects.items[("servers", NS, name)]


@pytest.fixture
async def world() -> AsyncIterator[tuple[Client, World]]:
    w = await World().start()
    runtime = SimpleNamespace(enroller=w.enroller, agents=w.agents)
    async with TestClient(TestServer(make_app(runtime), host="127.0.0.1")) as client:  # type: ignore[arg-type]
        yield client, w


async def enroll(http: Client, w: World, agent: Agent, **kw: Any) -> dict[str, Any]:
    resp = await http.post("/v1/enroll", json=w.enroll_body(agent, **kw))
    body = await resp.json()
    assert resp.status == 200, body
    agent.certificate = body["agent"]["certificate"]
    return dict(body)


async def signed(
    http: Client,
    w: World,
    agent: Agent,
    method: str,
    target: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    **kw: Any,
) -> Any:
    token = token or agent.token(method, target, w.clock())
    return await http.request(
        method,
        target,
        headers={
            "Authorization": f"KubepamAgent {token}",
            "User-Agent": "kubepam-agent/0.1.0",
            **(headers or {}),
        },
        **kw,
    )


async def refused(resp: Any, reason_fragment: str) -> None:
    body = await resp.json()
    assert resp.status == 401, body
    assert body["error"] == "invalid_token" and reason_fragment in body["error_description"], body


async def test_enroll_with_csr_issues_a_certificate_chaining_to_the_project_ca(
    world: tuple[Client, World],
) -> None:
    http, w = world
    agent = Agent("web-1.acme.internal")
    body = await enroll(http, w, agent)
    cert = x509.load_pem_x509_certificate(body["agent"]["certificate"].encode())
    ca = w.cas.current(NS, PROJECT)
    assert ca is not None
    cert.verify_directly_issued_by(ca.x509_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web-1.acme.internal"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [agent_uri(NS, "web-1.acme.internal")]
    assert cert.not_valid_after_utc == w.clock() + timedelta(hours=24)
    assert body["agent"]["caCertificates"] == w.cas.ca_bundle(NS, PROJECT)
    assert body["agent"]["renewAfter"] == (w.clock() + timedelta(hours=16)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = w.server("web-1.acme.internal")["status"]["agent"]
    assert status["keyFingerprint"] == spki_fingerprint(agent.key.public_key())
    assert status["certificateSerial"] == str(cert.serial_number) and status["version"] == "0.1.0"
    assert status["enrolledAt"] and status["certificateExpiresAt"]


async def test_the_enrollment_token_cannot_be_replayed_for_an_enrolled_server(
    world: tuple[Client, World],
) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    fingerprint = w.server("web-1")["status"]["agent"]["keyFingerprint"]
    for body in (
        w.enroll_body(Agent("web-1")),
        {**w.enroll_body(agent), "csr": None, "labels": {"role": "db"}},
    ):
        resp = await http.post("/v1/enroll", json={k: v for k, v in body.items() if v is not None})
        answer = await resp.json()
        assert resp.status == 409 and "already has an enrolled agent" in answer["error_description"], answer
    assert w.server("web-1")["status"]["agent"]["keyFingerprint"] == fingerprint
    assert w.server("web-1")["metadata"]["labels"]["role"] == "web"


async def test_enrollment_without_csr_is_unchanged_and_a_bad_csr_changes_nothing(
    world: tuple[Client, World],
) -> None:
    http, w = world
    body = {k: v for k, v in w.enroll_body(Agent("plain-1")).items() if k not in ("csr", "agentVersion")}
    resp = await http.post("/v1/enroll", json=body)
    answer = await resp.json()
    assert resp.status == 200 and "agent" not in answer and "agent" not in w.server("plain-1")["status"]
    resp = await http.post("/v1/enroll", json=w.enroll_body(Agent("bad-1"), csr="not a csr"))
    assert resp.status == 400 and ("servers", NS, "bad-1") not in w.objects.items


async def test_signed_access_returns_the_servers_accounts_with_etag_and_long_poll(
    world: tuple[Client, World],
) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    target = "/v1/servers/self/access?wait=0"
    resp = await signed(http, w, agent, "GET", target)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["server"] == f"{NS}/web-1" and body["project"] == PROJECT
    assert body["trustedUserCAKeys"] == w.cas.trusted_user_ca_keys(NS, PROJECT)
    assert body["accounts"] == [
        {"name": "alice", "principals": ["alice"], "sudo": True, "sources": [f"{NS}/ops-access/servers"]},
        {
            "name": "wl_deployer",
            "principals": ["wl_deployer"],
            "sudo": True,
            "sources": [f"{NS}/ops-access/servers"],
        },
    ]
    etag = resp.headers["ETag"]
    resp = await signed(http, w, agent, "GET", target, headers={"If-None-Match": etag})
    assert resp.status == 304 and resp.headers["ETag"] == etag

    # held: a group member's certificate issued meanwhile ends the wait with the new state
    w.directory.policy_list.append(
        parse_policy(
            NS,
            "ops-group",
            {"principals": {"groups": ["ops"]}, "rules": [{"projects": ["*"], "servers": {}}]},
        )
    )
    target = "/v1/servers/self/access?wait=5"

    async def issue_later() -> None:
        await asyncio.sleep(0.1)
        w.directory.logins.append(
            (
                NS,
                "web-1",
                IssuedLogin("carol", frozenset({"ops"}), ("carol",), w.clock() + timedelta(minutes=3)),
            )
        )
        w.changes.bump(server_scope(NS, "web-1"))

    task = asyncio.create_task(issue_later())
    started = asyncio.get_running_loop().time()
    resp = await signed(http, w, agent, "GET", target, headers={"If-None-Match": etag})
    body = await resp.json()
    await task
    assert resp.status == 200 and resp.headers["ETag"] != etag
    assert asyncio.get_running_loop().time() - started < 2
    assert [a["name"] for a in body["accounts"]] == ["alice", "carol", "wl_deployer"]

    # held until wait runs out: 304
    resp = await signed(
        http,
        w,
        agent,
        "GET",
        "/v1/servers/self/access?wait=1",
        headers={"If-None-Match": resp.headers["ETag"]},
    )
    assert resp.status == 304
    resp = await signed(http, w, agent, "GET", "/v1/servers/self/access?wait=56")
    assert resp.status == 400


async def test_a_server_only_ever_gets_its_own_state(world: tuple[Client, World]) -> None:
    http, w = world
    one, two = Agent("web-1"), Agent("web-2")
    await enroll(http, w, one)
    await enroll(http, w, two, labels={"role": "db"})
    body = await (await signed(http, w, two, "GET", "/v1/servers/self/access")).json()
    assert body["server"] == f"{NS}/web-2" and body["accounts"] == []
    # a certificate from the project's CA that names web-1 but carries web-2's key: not web-1's key
    ca = w.cas.current(NS, PROJECT)
    assert ca is not None
    forged = Agent("web-1", key=two.key)
    forged.certificate = sign_client_csr(
        ca,
        two.csr(),
        "web-1",
        agent_uri(NS, "web-1"),
        validity(w.clock(), timedelta(hours=1)),
        random_serial(),
    )
    await refused(await signed(http, w, forged, "GET", "/v1/servers/self/access"), "not the one enrolled")


async def test_a_certificate_from_another_projects_ca_is_refused(world: tuple[Client, World]) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    other_ca = w.cas.current(NS, OTHER)
    assert other_ca is not None
    agent.certificate = sign_client_csr(
        other_ca,
        agent.csr(),
        "web-1",
        agent_uri(NS, "web-1"),
        validity(w.clock(), timedelta(hours=1)),
        random_serial(),
    )
    await refused(
        await signed(http, w, agent, "GET", "/v1/servers/self/access"),
        "not issued by a current or retiring CA",
    )


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda a, now: a.token("POST", "/v1/servers/self/access", now), "htm"),
        (lambda a, now: a.token("GET", "/v1/servers/self/access?wait=1", now), "htu"),
        (lambda a, now: a.token("GET", "/v1/servers/self/access", now - timedelta(seconds=61)), "iat"),
        (
            lambda a, now: a.token("GET", "/v1/servers/self/access", now, exp=int(now.timestamp()) - 1),
            "expired",
        ),
        (
            lambda a, now: a.token("GET", "/v1/servers/self/access", now, exp=int(now.timestamp()) + 300),
            "at most 60 s",
        ),
        (lambda a, now: a.token("GET", "/v1/servers/self/access", now, jti="short"), "jti"),
        (lambda a, now: a.token("GET", "/v1/servers/self/access", now)[:-4] + "AAAA", "signature"),
        (lambda a, now: "not-a-jwt", "compact JWS"),
    ],
    ids=["wrong-htm", "wrong-htu", "old-iat", "expired", "long-lived", "bad-jti", "bad-signature", "garbage"],
)
async def test_signed_request_refusals(
    world: tuple[Client, World],
    make: Callable[[Agent, datetime], str],
    fragment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    token = make(agent, w.clock())
    resp = await signed(http, w, agent, "GET", "/v1/servers/self/access", token=token)
    await refused(resp, fragment)
    assert token not in caplog.text


async def test_missing_or_foreign_authorization_is_refused(world: tuple[Client, World]) -> None:
    http, _ = world
    resp = await http.get("/v1/servers/self/access")
    await refused(resp, "KubepamAgent")
    resp = await http.get("/v1/servers/self/access", headers={"Authorization": "Bearer abc"})
    await refused(resp, "KubepamAgent")


async def test_a_replayed_jti_is_refused(world: tuple[Client, World]) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    token = agent.token("GET", "/v1/servers/self/access", w.clock())
    assert (await signed(http, w, agent, "GET", "/v1/servers/self/access", token=token)).status == 200
    await refused(await signed(http, w, agent, "GET", "/v1/servers/self/access", token=token), "already used")


async def test_renewal_with_a_new_key_ends_the_old_key_at_once(world: tuple[Client, World]) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    new_key = ec.generate_private_key(ec.SECP256R1())  # ES256 is accepted too
    resp = await signed(
        http, w, agent, "POST", "/v1/servers/self/certificate", json={"csr": agent.csr(new_key)}
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert set(body) == {"certificate", "caCertificates", "expiresAt", "renewAfter"}
    old = Agent("web-1", key=agent.key)
    old.certificate = agent.certificate
    agent.key, agent.certificate = new_key, body["certificate"]
    assert w.server("web-1")["status"]["agent"]["keyFingerprint"] == spki_fingerprint(new_key.public_key())
    assert (await signed(http, w, agent, "GET", "/v1/servers/self/access")).status == 200
    await refused(await signed(http, w, old, "GET", "/v1/servers/self/access"), "not the one enrolled")
    # the same key renewed: the old certificate of that key keeps working until it expires
    resp = await signed(http, w, agent, "POST", "/v1/servers/self/certificate", json={"csr": agent.csr()})
    assert resp.status == 200
    assert (await signed(http, w, agent, "GET", "/v1/servers/self/access")).status == 200
    resp = await signed(http, w, agent, "POST", "/v1/servers/self/certificate", json={"csr": "nope"})
    assert resp.status == 400


async def test_a_deleted_server_ends_its_agent(world: tuple[Client, World]) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    del w.objects.items[("servers", NS, "web-1")]
    await refused(await signed(http, w, agent, "GET", "/v1/servers/self/access"), "no Server")


async def test_login_events_become_events_audit_lines_and_last_login(world: tuple[Client, World]) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    now = w.clock()
    events = [
        {
            "time": (now - timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "user": user,
            "source": "192.0.2.7",
            "port": 50022,
            "method": "publickey",
            "keyId": f"kubepam:{NS}/req-{s}:{person}",
            "serial": "123",
            "outcome": "accepted",
        }
        for s, user, person in ((20, "alice", "alice"), (5, "ops", "carol"))
    ]
    resp = await signed(http, w, agent, "POST", "/v1/servers/self/events", json={"events": events})
    assert resp.status == 202 and await resp.json() == {"accepted": 2}
    assert w.events.seen == [
        ("web-1", "Login", f"alice logged in as alice from 192.0.2.7 (key id kubepam:{NS}/req-20:alice)"),
        ("web-1", "Login", f"carol logged in as ops from 192.0.2.7 (key id kubepam:{NS}/req-5:carol)"),
    ]
    assert [(reason, audit["actor"], audit["user"]) for reason, audit in w.events.audits] == [
        ("Login", "alice", "alice"),
        ("Login", "carol", "ops"),
    ]
    assert w.server("web-1")["status"]["agent"]["lastLogin"] == {
        "time": events[1]["time"],
        "user": "ops",
        "person": "carol",
        "source": "192.0.2.7",
        "keyId": f"kubepam:{NS}/req-5:carol",
    }


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": "x"},
        {"events": [{"time": "2026-01-01T00:00:00Z", "user": "a", "source": "s"}] * 101},
        {"events": [{"time": "yesterday", "user": "a", "source": "s"}]},
        {"events": [{"time": "2026-01-01T00:00:00Z", "user": "a" * 33, "source": "s"}]},
        {"events": [{"time": "2026-01-01T00:00:00Z", "user": "a", "source": "s" * 65}]},
        {"events": [{"time": "2026-01-01T00:00:00Z", "user": "a", "source": "s", "keyId": "k" * 257}]},
        {"events": [{"time": "2026-01-01T00:00:00Z", "user": "a", "source": "s", "port": "22"}]},
        {"events": [{"time": "2026-01-01T00:00:00Z", "user": "a", "source": "s", "outcome": "maybe"}]},
        {"events": ["x"]},
    ],
)
async def test_bad_event_bodies_are_400(world: tuple[Client, World], body: dict[str, Any]) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    resp = await signed(http, w, agent, "POST", "/v1/servers/self/events", json=body)
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
    assert w.events.seen == []


async def test_access_requests_are_the_heartbeat_at_most_every_30_seconds(
    world: tuple[Client, World],
) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)

    def heartbeats() -> list[dict[str, Any]]:
        return [p["agent"] for _, p in w.objects.status_patches if "lastSeen" in (p.get("agent") or {})]

    for _ in range(3):
        assert (await signed(http, w, agent, "GET", "/v1/servers/self/access")).status == 200
    assert heartbeats() == [{"lastSeen": w.clock().strftime("%Y-%m-%dT%H:%M:%SZ"), "version": "0.1.0"}]
    w.clock.advance(seconds=31)
    assert (await signed(http, w, agent, "GET", "/v1/servers/self/access")).status == 200
    assert len(heartbeats()) == 2
    assert w.server("web-1")["status"]["agent"]["lastSeen"] == w.clock().strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeDeadlines:
    def __init__(self) -> None:
        self.jobs: dict[Any, tuple[datetime, Any]] = {}

    def schedule(self, key: Any, when: datetime, action: Any) -> None:
        self.jobs[key] = (when, action)

    def cancel(self, key: Any) -> None:
        self.jobs.pop(key, None)


async def test_a_silent_agent_makes_its_server_not_ready_at_the_deadline(world: tuple[Client, World]) -> None:
    http, w = world
    agent = Agent("web-1")
    await enroll(http, w, agent)
    assert (await signed(http, w, agent, "GET", "/v1/servers/self/access")).status == 200
    deadlines = FakeDeadlines()
    health = ServerHealth(w.objects, deadlines, w.clock, timedelta(minutes=5))
    await health.observe(w.server("web-1"))
    assert condition_status(w.server("web-1")["status"]["conditions"], "Ready") == "True"
    key = ("agent-silent", NS, "web-1")
    when, action = deadlines.jobs[key]
    assert when == w.clock() + timedelta(minutes=5)  # the one scheduler's deadline, not a poll

    w.clock.advance(minutes=5)
    await action()
    ready = next(c for c in w.server("web-1")["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "AgentSilent"
    assert "last seen" in ready["message"] and key not in deadlines.jobs

    # it reports again: Ready, and the next deadline armed
    assert (await signed(http, w, agent, "GET", "/v1/servers/self/access")).status == 200
    await health.observe(w.server("web-1"))
    assert condition_status(w.server("web-1")["status"]["conditions"], "Ready") == "True"
    assert deadlines.jobs[key][0] == w.clock() + timedelta(minutes=5)

    # a Server without an agent has no deadline
    await enroll(http, w, Agent("web-2"))
    plain = copy.deepcopy(w.server("web-2"))
    plain["status"].pop("agent")
    await health.observe(plain)
    assert ("agent-silent", NS, "web-2") not in deadlines.jobs


async def test_a_held_poll_wakes_only_for_its_own_scopes() -> None:
    changes = Changes()
    mine = (namespace_scope(NS), server_scope(NS, "web-1"))
    since = changes.versions(mine)
    loop = asyncio.get_running_loop()

    async def bump_later(scope: Any) -> None:
        await asyncio.sleep(0.05)
        changes.bump(scope)

    started = loop.time()
    other = asyncio.create_task(bump_later(server_scope(NS, "web-2")))
    await changes.wait(mine, since, 0.3)  # another server's heartbeat does not wake it
    await other
    assert loop.time() - started >= 0.29
    started = loop.time()
    own = asyncio.create_task(bump_later(namespace_scope(NS)))  # a policy of its namespace does
    await changes.wait(mine, since, 5)
    await own
    assert loop.time() - started < 1
    await changes.wait(mine, since, 5)  # already behind: returns at once
    assert loop.time() - started < 1


async def test_agent_silent_fires_from_the_one_scheduler() -> None:
    from kubepam.services.scheduler import Scheduler

    def now() -> datetime:
        return datetime.now(UTC)

    objects = MergeObjects()
    seen = now().replace(microsecond=0)
    objects.add(
        "servers",
        {
            "metadata": {"name": "web-1", "namespace": NS},
            "spec": {"project": PROJECT, "hostname": "web-1"},
            "status": {
                "agent": {"keyFingerprint": "ab" * 32, "lastSeen": seen.strftime("%Y-%m-%dT%H:%M:%SZ")}
            },
        },
    )
    scheduler = Scheduler(now)
    health = ServerHealth(objects, scheduler, now, now() + timedelta(milliseconds=200) - seen)
    await health.observe(objects.items[("servers", NS, "web-1")])
    assert (
        condition_status(objects.items[("servers", NS, "web-1")]["status"]["conditions"], "Ready") == "True"
    )
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.5)
    task.cancel()
    await scheduler.close()
    ready = next(
        c for c in objects.items[("servers", NS, "web-1")]["status"]["conditions"] if c["type"] == "Ready"
    )
    assert (ready["status"], ready["reason"]) == ("False", "AgentSilent")
