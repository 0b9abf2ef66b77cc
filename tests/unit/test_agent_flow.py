"""The agent end to end against a tiny in-process fake broker on 127.0.0.1 (docs/agent-protocol.md):
enroll with a CSR -> signed access long poll -> accounts applied (fake command runner, every path in a
temporary directory) -> login events from the auth log sent, or spooled while the broker fails."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from kubepam.agent import plan as p
from kubepam.agent.main import Agent
from kubepam.agent.settings import AgentSettings
from kubepam.agent.system import Result, System

pytestmark = pytest.mark.timeout(60)

ACCEPTED = (
    "2026-11-22T09:59:58+00:00 web-1 sshd[4242]: Accepted publickey for alice from 127.0.0.1 port 50022 "
    "ssh2: ED25519-CERT SHA256:4ZFU ID kubepam:team-a/req-1:alice (serial 123) CA ED25519 SHA256:4JNf\n"
)


class FakeBroker:
    """Just enough of the broker: it issues a certificate for the CSR and checks every signed request
    as section 2 says (x5c chains to its CA, key fingerprint recorded, signature, htm/htu, jti once)."""

    def __init__(self) -> None:
        self.ca_key = Ed25519PrivateKey.generate()
        self.fingerprint: str | None = None
        self.enrollments: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.user_agents: set[str] = set()
        self.jtis: set[str] = set()
        self.access_calls: list[tuple[str | None, str]] = []
        self.fail_events = False
        self.desired: dict[str, Any] = {
            "server": "team-a/web-1",
            "project": "p",
            "generatedAt": "2026-11-22T10:00:00Z",
            "trustedUserCAKeys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA kubepam-ca\n",
            "accounts": [
                {"name": "alice", "principals": ["alice"], "sudo": False, "sources": ["team-a/x/servers"]},
                {"name": "root", "principals": ["root"], "sudo": True, "sources": ["team-a/x/servers"]},
                {"name": "wl_deployer", "principals": ["wl_deployer"], "sudo": True, "sources": []},
            ],
        }
        self.changed = asyncio.Event()

    def etag(self) -> str:
        body = {k: v for k, v in self.desired.items() if k != "generatedAt"}
        return '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() + '"'

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/enroll", self.enroll)
        app.router.add_get("/v1/servers/self/access", self.access)
        app.router.add_post("/v1/servers/self/events", self.post_events)
        return app

    def issue(self, csr_pem: str) -> dict[str, str]:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web-1")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "project CA")]))
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=24))
            .sign(self.ca_key, None)
        )
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.fingerprint = hashlib.sha256(spki).hexdigest()
        return {
            "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "caCertificates": "",
            "expiresAt": (now + timedelta(hours=24)).isoformat(),
            "renewAfter": (now + timedelta(hours=16)).isoformat(),
        }

    async def enroll(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.user_agents.add(request.headers.get("User-Agent", ""))
        if self.fingerprint is not None:
            return web.json_response({"error": "already_enrolled", "error_description": "x"}, status=409)
        assert body["os"] in ("linux", "windows")  # what the broker accepts
        self.enrollments.append(body)
        return web.json_response({"server": "team-a/web-1", "agent": self.issue(body["csr"])})

    def verify(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        assert scheme == "KubepamAgent", "unsigned request"
        der = base64.b64decode(jwt.get_unverified_header(token)["x5c"][0])
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(self._ca_cert(cert))
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert hashlib.sha256(spki).hexdigest() == self.fingerprint
        claims = jwt.decode(token, cert.public_key(), algorithms=["EdDSA"])  # type: ignore[arg-type]
        assert claims["htm"] == request.method
        assert claims["htu"] == request.path_qs
        assert claims["exp"] - claims["iat"] <= 60
        assert claims["jti"] not in self.jtis
        self.jtis.add(claims["jti"])
        self.user_agents.add(request.headers.get("User-Agent", ""))

    def _ca_cert(self, cert: x509.Certificate) -> x509.Certificate:
        now = datetime.now(UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(cert.issuer)
            .issuer_name(cert.issuer)
            .public_key(self.ca_key.public_key())
            .serial_number(1)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(self.ca_key, None)
        )

    async def access(self, request: web.Request) -> web.Response:
        self.verify(request)
        match = request.headers.get("If-None-Match")
        self.access_calls.append((match, request.query.get("wait", "")))
        if match == self.etag():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(float(request.query["wait"]), 1.0))
            except TimeoutError:
                return web.Response(status=304, headers={"ETag": self.etag()})
        return web.json_response(self.desired, headers={"ETag": self.etag()})

    async def post_events(self, request: web.Request) -> web.Response:
        self.verify(request)
        if self.fail_events:
            return web.json_response({"error": "unavailable", "error_description": "down"}, status=503)
        body = await request.json()
        assert len(body["events"]) <= 100
        self.events += body["events"]
        return web.json_response({"accepted": len(body["events"])}, status=202)


class FakeHost:
    """A command runner that keeps its own users and groups instead of touching the machine."""

    def __init__(self, taken_meanwhile: str = "") -> None:
        self.taken_meanwhile = taken_meanwhile  # a name someone else creates between plan and useradd
        self.users: dict[str, int] = {"root": 0}
        self.groups: dict[str, int] = {"root": 0}
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Result:
        self.commands.append(list(argv))
        if argv[0] == "groupadd":
            self.groups[argv[-1]] = int(argv[2])
        elif argv[0] == "useradd":
            if argv[-1] == self.taken_meanwhile:
                return Result(9, f"useradd: user '{argv[-1]}' already exists")
            self.users[argv[-1]] = int(argv[argv.index("-u") + 1])
        elif argv[0] == "userdel":
            self.users.pop(argv[-1], None)
        elif argv[0] == "groupdel":
            self.groups.pop(argv[-1], None)
        return Result(0)

    def local(self) -> p.Local:
        return p.Local(users=dict(self.users), groups=dict(self.groups))


@pytest.fixture
async def broker() -> AsyncIterator[tuple[FakeBroker, str]]:
    fake = FakeBroker()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield fake, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def make_settings(tmp_path: Path, url: str, **extra: Any) -> AgentSettings:
    (tmp_path / "token").write_text("enroll-token\n")
    return AgentSettings(
        broker=url,
        token_file=tmp_path / "token",
        namespace="team-a",
        project="p",
        hostname="web-1",
        labels={"role": "web"},
        state_dir=tmp_path / "state",
        sshd_dir=tmp_path / "ssh",
        sudoers_dir=tmp_path / "sudoers.d",
        auth_log=tmp_path / "auth.log",
        reload_sshd="kill -HUP 4242",
        backoff_initial=0.05,
        backoff_max=0.2,
        batch_seconds=0.1,
        poll_seconds=0.05,
        **extra,
    )


async def run_agent(settings: AgentSettings, host: FakeHost, forever: bool = False) -> tuple[Agent, int]:
    async with aiohttp.ClientSession() as session:
        agent = Agent(settings, System(settings, host, host.local), session)
        code = await asyncio.wait_for(agent.run_once(), timeout=20)
        return agent, code


async def test_once_enroll_access_apply_events(tmp_path: Path, broker: tuple[FakeBroker, str]) -> None:
    fake, url = broker
    settings = make_settings(tmp_path, url, once=True)
    (tmp_path / "auth.log").write_text(ACCEPTED)  # before the agent's time: not reported
    host = FakeHost()

    _, code = await run_agent(settings, host)
    assert code == 0
    (enrolled,) = fake.enrollments
    assert enrolled["token"] == "enroll-token" and enrolled["labels"] == {"role": "web"}
    assert (
        enrolled["namespace"] == "team-a" and enrolled["project"] == "p" and enrolled["hostname"] == "web-1"
    )
    assert "BEGIN CERTIFICATE REQUEST" in enrolled["csr"]
    assert fake.user_agents == {"kubepam-agent/0.1.0"}
    # applied: alice and wl_deployer created, root (not ours) refused and untouched
    assert host.users == {"root": 0, "alice": 60000, "wl_deployer": 60001}
    assert not any("root" in c[-1] for c in host.commands if c[0] in ("useradd", "userdel", "pkill"))
    assert (tmp_path / "ssh" / "principals" / "alice").read_text() == "alice\n"
    assert (tmp_path / "sudoers.d" / "kubepam-wl_deployer").exists()
    assert not (tmp_path / "sudoers.d" / "kubepam-root").exists()
    assert (tmp_path / "ssh" / "trusted_user_ca_keys.pub").read_text() == fake.desired["trustedUserCAKeys"]
    assert host.commands.count(["kill", "-HUP", "4242"]) == 1
    assert fake.events == []
    assert fake.access_calls == [(None, "0")]

    # a second run: no new enrollment (the stored certificate), the new login lines are reported once
    with (tmp_path / "auth.log").open("a") as f:
        f.write(ACCEPTED + "an unrelated line\n")
    _, code = await run_agent(settings, host)
    assert code == 0
    assert len(fake.enrollments) == 1
    assert fake.events == [
        {
            "time": "2026-11-22T09:59:58Z",
            "user": "alice",
            "source": "127.0.0.1",
            "port": 50022,
            "method": "publickey",
            "keyId": "kubepam:team-a/req-1:alice",
            "serial": "123",
            "outcome": "accepted",
        }
    ]
    assert host.commands.count(["kill", "-HUP", "4242"]) == 1  # CA keys unchanged: no reload
    _, code = await run_agent(settings, host)
    assert len(fake.events) == 1  # not sent twice

    # alice leaves the desired state: principals removed, sessions ended, account kept for the grace period
    fake.desired["accounts"] = fake.desired["accounts"][1:]
    await run_agent(settings, host)
    assert not (tmp_path / "ssh" / "principals" / "alice").exists()
    assert ["pkill", "-KILL", "-u", "alice"] in host.commands
    assert "alice" in host.users
    record = json.loads((tmp_path / "state" / "accounts.json").read_text())
    assert record["accounts"]["alice"]["removedAt"]


async def test_a_name_taken_between_plan_and_useradd_gets_no_principals(
    tmp_path: Path, broker: tuple[FakeBroker, str]
) -> None:
    fake, url = broker
    fake.desired["accounts"][2]["sudo"] = True
    settings = make_settings(tmp_path, url, once=True)
    host = FakeHost(taken_meanwhile="wl_deployer")
    _, code = await run_agent(settings, host)
    assert code == 1
    assert (tmp_path / "ssh" / "principals" / "alice").exists()
    assert not (tmp_path / "ssh" / "principals" / "wl_deployer").exists()
    assert not (tmp_path / "sudoers.d" / "kubepam-wl_deployer").exists()
    # the name now belongs to someone else (another UID): refused from now on, never touched
    host.users["wl_deployer"] = 1500
    host.taken_meanwhile = ""
    host.commands.clear()
    await run_agent(settings, host)
    assert not (tmp_path / "ssh" / "principals" / "wl_deployer").exists()
    assert not any(c[-1] == "wl_deployer" for c in host.commands)
    # and when it leaves the desired state, the agent does nothing to it (no pkill of someone else)
    fake.desired["accounts"] = fake.desired["accounts"][:2]
    await run_agent(settings, host)
    assert not any(c[-1] == "wl_deployer" for c in host.commands)
    record = json.loads((tmp_path / "state" / "accounts.json").read_text())
    assert "wl_deployer" not in record["accounts"]


async def test_a_failed_write_is_retried(tmp_path: Path, broker: tuple[FakeBroker, str]) -> None:
    _, url = broker
    settings = make_settings(tmp_path, url, once=True)
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "principals").write_text("in the way")  # the principals directory cannot be made
    host = FakeHost()
    _, code = await run_agent(settings, host)
    assert code == 1
    assert host.users["alice"] == 60000
    (tmp_path / "ssh" / "principals").unlink()
    _, code = await run_agent(settings, host)
    assert code == 0
    assert (tmp_path / "ssh" / "principals" / "alice").read_text() == "alice\n"
    assert (tmp_path / "ssh" / "principals" / "wl_deployer").read_text() == "wl_deployer\n"
    assert [c[0] for c in host.commands].count("useradd") == 2  # created once each


async def test_events_spooled_while_the_broker_fails(tmp_path: Path, broker: tuple[FakeBroker, str]) -> None:
    fake, url = broker
    settings = make_settings(tmp_path, url, once=True)
    (tmp_path / "auth.log").write_text("")
    host = FakeHost()
    await run_agent(settings, host)
    fake.fail_events = True
    with (tmp_path / "auth.log").open("a") as f:
        f.write(ACCEPTED * 150)
    _, code = await run_agent(settings, host)
    assert code == 1
    assert fake.events == []
    assert len(list((tmp_path / "state" / "spool").iterdir())) == 2  # 100 + 50
    fake.fail_events = False
    _, code = await run_agent(settings, host)
    assert code == 0
    assert len(fake.events) == 150
    assert list((tmp_path / "state" / "spool").iterdir()) == []


async def test_enrollment_refused_is_fatal(tmp_path: Path, broker: tuple[FakeBroker, str]) -> None:
    fake, url = broker
    fake.fingerprint = "someone else's key"  # the server is enrolled already
    from kubepam.agent.main import main

    assert (
        await asyncio.wait_for(
            main(make_settings(tmp_path, url, once=True), System(make_settings(tmp_path, url), FakeHost())),
            20,
        )
        == 2
    )
    assert not (tmp_path / "state" / "certificate.json").exists()


async def test_run_forever_long_polls_and_stops_cleanly(
    tmp_path: Path, broker: tuple[FakeBroker, str]
) -> None:
    fake, url = broker
    settings = make_settings(tmp_path, url, wait_seconds=5)
    (tmp_path / "auth.log").write_text("")
    host = FakeHost()
    async with aiohttp.ClientSession() as session:
        agent = Agent(settings, System(settings, host, host.local), session)
        task = asyncio.create_task(agent.run_forever())

        async def until(check: Any) -> None:
            for _ in range(200):
                if check():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("timed out")

        await until(lambda: "alice" in host.users)
        await until(lambda: any(m is not None for m, _ in fake.access_calls))  # a long poll with the ETag
        assert ("" not in [w for _, w in fake.access_calls]) and fake.access_calls[-1][1] == "5"
        fake.desired["accounts"].append({"name": "bob", "principals": ["bob"], "sudo": False, "sources": []})
        fake.changed.set()
        await until(lambda: "bob" in host.users)
        with (tmp_path / "auth.log").open("a") as f:
            f.write(ACCEPTED)
        await until(lambda: len(fake.events) == 1)
        agent.stop.set()  # what SIGTERM does
        assert await asyncio.wait_for(task, timeout=10) == 0
