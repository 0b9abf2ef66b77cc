"""The audit trail's table test (GitHub issue 17): every action in the list writes exactly one audit line
when the real service code does it (fakes for the API server and the backends, the real Events adapter
with a fake Events API, so the path from an Event's audit fields to the line is the one the operator
runs). Each row sets its world up, marks, runs the one step, and the step's lines are counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepam.adapters import audit, postgres
from kubepam.adapters.events import Events
from kubepam.domain.oauth import OAuthError
from kubepam.domain.policy import parse_policy
from kubepam.domain.project import parse_project
from kubepam.handlers import certificaterequests
from kubepam.handlers.workloadconnection import PHASES, audit_phase_change
from kubepam.services.accounts import Accounts
from kubepam.services.certificates import CertificateIssuer
from kubepam.services.jit import JitService
from kubepam.services.scheduler import Scheduler
from tests.handlers.broker_world import BrokerWorld, PolicyDir
from tests.handlers.fakes import Clock, FakeObjects, FakeRbac, FakeSecrets
from tests.handlers.test_checkout_approvals import TWO_STAGES
from tests.handlers.test_checkout_service import NS, World
from tests.handlers.test_token_exchange import World as TokenWorld
from tests.handlers.test_token_exchange import form


class Capture(logging.Handler):
    """Every line written on kubepam.audit since the last mark, parsed."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))

    def mark(self) -> None:
        self.lines.clear()

    def actions(self) -> list[str]:
        return [line["action"] for line in self.lines]


@pytest.fixture
def trail() -> Iterator[Capture]:
    capture = Capture()
    logger = logging.getLogger(audit.LOGGER)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)


class FakeEventsApi:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.bodies.append(body)


def real_events() -> Events:
    """The operator's Events adapter, posting to a fake Events API."""
    events = Events.__new__(Events)
    events._api = FakeEventsApi()
    events._component = "kubepam-operator"
    return events


# ----- checkouts --------------------------------------------------------------------------------------
def checkouts(**policy: Any) -> World:
    w = World(**policy)
    w.service._events = real_events()
    return w


def create(w: World, name: str, requester: str, **spec: Any) -> None:
    w.create(name, requester, **spec)
    w.objects.items[("checkouts", NS, name)].update(apiVersion="kubepam.io/v1alpha1", kind="Checkout")


async def checkout_granted(t: Capture) -> None:
    w = checkouts()
    create(w, "a", "alice")
    t.mark()
    assert (await w.step("a"))["phase"] == "Active"


async def checkout_denied(t: Capture) -> None:
    w = checkouts()
    create(w, "a", "alice")
    await w.step("a")
    create(w, "b", "bob")
    t.mark()
    assert (await w.step("b"))["phase"] == "Denied"


async def checkout_queued(t: Capture) -> None:
    w = checkouts()
    create(w, "a", "alice")
    await w.step("a")
    create(w, "b", "bob", queue=True)
    t.mark()
    assert (await w.step("b"))["phase"] == "Queued"


async def checkin(t: Capture) -> None:
    w = checkouts()
    create(w, "a", "alice")
    await w.step("a")
    w.objects.items[("checkouts", NS, "a")]["spec"]["checkin"] = {"requested": True}
    t.mark()
    assert (await w.step("a"))["phase"] == "CheckedIn"


async def rotation(t: Capture) -> None:
    w = checkouts()
    create(w, "a", "alice")
    await w.step("a")
    w.objects.items[("checkouts", NS, "a")]["spec"]["checkin"] = {"force": True}
    t.mark()
    assert (await w.step("a"))["rotation"]["completedAt"]


async def rotation_failed(t: Capture) -> None:
    w = checkouts()
    create(w, "a", "alice")
    await w.step("a")

    async def failing(account: Any) -> None:
        raise postgres.BackendError("postgresql db:5432: OperationalError: connection refused")

    w.accounts.rotate = failing  # type: ignore[method-assign]
    w.objects.items[("checkouts", NS, "a")]["spec"]["checkin"] = {"force": True}
    t.mark()
    assert "connection refused" in (await w.step("a"))["rotation"]["lastError"]


async def _elevation_pending(t: Capture) -> World:
    w = checkouts()
    create(w, "a", "alice", elevation={"requested": True})
    t.mark()
    assert (await w.step("a"))["elevation"]["state"] == "PENDING"
    return w


async def elevation_requested(t: Capture) -> None:
    await _elevation_pending(t)


async def elevation_approved(t: Capture) -> None:
    w = await _elevation_pending(t)
    w.vote("a", "approver", "Approved")
    t.mark()
    assert (await w.step("a"))["elevation"]["state"] == "ELEVATED"


async def elevation_denied(t: Capture) -> None:
    w = await _elevation_pending(t)
    w.vote("a", "approver", "Denied")
    t.mark()
    assert (await w.step("a"))["elevation"]["state"] == "DENIED"


async def elevation_removed(t: Capture) -> None:
    w = await _elevation_pending(t)
    w.vote("a", "approver", "Approved")
    await w.step("a")
    w.clock.advance(minutes=11)
    t.mark()
    assert (await w.step("a"))["elevation"]["state"] == "REMOVED"


async def approval_requested(t: Capture) -> None:
    w = checkouts(**TWO_STAGES)
    create(w, "a", "alice")
    t.mark()
    assert (await w.step("a"))["phase"] == "Pending"


async def breakglass(t: Capture) -> None:
    w = checkouts(**TWO_STAGES)
    create(w, "a", "alice", breakGlass={"reason": "production database down, incident INC-4711"})
    t.mark()
    assert (await w.step("a"))["breakGlass"]["used"]


# ----- JIT accounts -----------------------------------------------------------------------------------
class FakeServiceAccounts:
    def __init__(self) -> None:
        self.items: set[tuple[str, str]] = set()

    async def ensure(self, namespace: str, name: str, owner: Any, labels: Any) -> str:
        self.items.add((namespace, name))
        return f"uid-{name}"

    async def token(self, namespace: str, name: str, seconds: int) -> tuple[str, str]:
        return "not-a-real-token", "2030-01-01T00:00:00Z"

    async def delete(self, namespace: str, name: str, owner: Any) -> None:
        self.items.discard((namespace, name))


class JitDir:
    def __init__(self) -> None:
        jit = {
            "enabled": True,
            "backend": "kubernetes",
            "allowedGroups": ["view"],
            "namespaces": ["team-apps"],
            "maxDuration": "2h",
        }
        self._project = replace(parse_project({"jit": jit}), uid="project-uid")

    def project(self, namespace: str, name: str) -> Any:
        return self._project if name == "p" else None


async def _jit_enabled(t: Capture) -> tuple[JitService, FakeObjects]:
    clock, objects, secrets = Clock(), FakeObjects(), FakeSecrets()
    service = JitService(
        JitDir(),
        objects,
        FakeServiceAccounts(),  # type: ignore[arg-type]
        secrets,  # type: ignore[arg-type]
        FakeRbac(),  # type: ignore[arg-type]
        Accounts(secrets, clock),  # type: ignore[arg-type]
        Scheduler(clock),
        real_events(),
        clock,
    )
    objects.add(
        "jitaccounts",
        {
            "apiVersion": "kubepam.io/v1alpha1",
            "kind": "JitAccount",
            "metadata": {"name": "j", "namespace": NS},
            "spec": {
                "project": "p",
                "owner": "alice",
                "groups": ["view"],
                "reason": "incident",
                "duration": "1h",
            },
        },
    )
    t.mark()
    await service.reconcile(NS, "j")
    assert objects.items[("jitaccounts", NS, "j")]["status"]["phase"] == "Active"
    return service, objects


async def jit_enabled(t: Capture) -> None:
    await _jit_enabled(t)


async def jit_disabled(t: Capture) -> None:
    service, objects = await _jit_enabled(t)
    obj = objects.items[("jitaccounts", NS, "j")]
    obj["spec"]["disabled"] = True
    obj["metadata"]["generation"] += 1
    t.mark()
    await service.reconcile(NS, "j")
    assert objects.items[("jitaccounts", NS, "j")]["status"]["phase"] == "Disabled"


# ----- the broker: token exchange and workload certificates -------------------------------------------
async def token_issued(t: Capture) -> None:
    world = await TokenWorld("github").start()
    t.mark()
    await world.exchange.exchange(form(world.issuer.mint("github")))


async def token_refused(t: Capture) -> None:
    world = await TokenWorld("github").start()
    t.mark()
    with pytest.raises(OAuthError):
        await world.exchange.exchange(form(world.issuer.mint("github", repository="evil/fork")))


async def _ssh_sign(t: Capture, status: int, **body: Any) -> None:
    bw = await BrokerWorld().start()
    async with TestClient(TestServer(bw.app(), host="127.0.0.1")) as http:
        t.mark()
        bearer = {"Authorization": f"Bearer {bw.access_token}"}
        resp = await http.post("/v1/ssh/sign", json=bw.ssh_body(**body), headers=bearer)
        assert resp.status == status, await resp.text()


async def workload_certificate_issued(t: Capture) -> None:
    await _ssh_sign(t, 200)


async def workload_certificate_denied(t: Capture) -> None:
    await _ssh_sign(t, 403, server="db-1")


# ----- people's certificate requests (the kopf handler, with the broker world's issuer) ----------------
class PeopleDir(PolicyDir):
    """The broker world's project and server, and a rule letting the group `users` reach the server."""

    def policies(self, namespace: str) -> list[Any]:
        people = parse_policy(
            namespace,
            "people",
            {
                "principals": {"groups": ["users"]},
                "rules": [{"name": "ssh", "projects": ["web"], "servers": {"matchLabels": {"role": "web"}}}],
            },
        )
        return [*super().policies(namespace), people]


async def _request(t: Capture, monkeypatch: pytest.MonkeyPatch, groups: list[str]) -> dict[str, Any]:
    bw = await BrokerWorld().start()
    issuer = CertificateIssuer(PeopleDir(), bw.cas, bw.world.clock)  # type: ignore[arg-type]
    monkeypatch.setattr(certificaterequests, "runtime", lambda memo: SimpleNamespace(issuer=issuer))
    monkeypatch.setattr(certificaterequests.kopf, "warn", lambda *a, **kw: None)  # no kopf event loop here
    spec = {
        "project": "web",
        "server": "web-1",
        "requester": "alice",
        "groups": groups,
        "publicKey": bw.public_key,
    }
    meta = {"namespace": "team-a", "name": "r1", "uid": "uid-r1", "generation": 1}
    patch = kopf.Patch()
    t.mark()
    certificaterequests._decide("ssh", spec, {}, meta, patch, None)  # type: ignore[arg-type]
    return dict(patch.get("status") or {})


# ----- connections ------------------------------------------------------------------------------------
def _phase_change(t: Capture, before: str, after: str) -> None:
    rt = SimpleNamespace(elector=None)
    meta = {"namespace": "team-a", "name": "ci", "uid": "uid-ci", "generation": 1}
    PHASES.pop(("team-a", "ci"), None)
    audit_phase_change(rt, meta, {"phase": before})  # type: ignore[arg-type]
    t.mark()
    audit_phase_change(rt, meta, {"phase": after, "activatedBy": "sec-admin"})  # type: ignore[arg-type]
    audit_phase_change(rt, meta, {"phase": after, "activatedBy": "sec-admin"})  # type: ignore[arg-type]


async def connection_promoted(t: Capture) -> None:
    _phase_change(t, "Draft", "Active")


async def connection_demoted(t: Capture) -> None:
    _phase_change(t, "Active", "Draft")


Row = Callable[[Capture], Awaitable[None]]
TABLE: list[tuple[str, str, Row]] = [
    # (the issue's words, the action, the step)
    ("token exchange issued", "token.issued", token_issued),
    ("token exchange refused", "token.refused", token_refused),
    ("certificate issued (workload)", "certificate.issued", workload_certificate_issued),
    ("certificate denied (workload)", "certificate.denied", workload_certificate_denied),
    ("checkout granted", "checkout.granted", checkout_granted),
    ("checkout denied", "checkout.denied", checkout_denied),
    ("checkout queued", "checkout.queued", checkout_queued),
    ("check-in", "checkout.checkin", checkin),
    ("rotation", "rotation.succeeded", rotation),
    ("rotation failed (each failed attempt)", "rotation.failed", rotation_failed),
    ("elevation requested", "elevation.requested", elevation_requested),
    ("elevation approved", "elevation.approved", elevation_approved),
    ("elevation denied", "elevation.denied", elevation_denied),
    ("elevation removed", "elevation.removed", elevation_removed),
    ("approval requested", "approval.requested", approval_requested),
    ("JIT enabled", "jit.enabled", jit_enabled),
    ("JIT disabled", "jit.disabled", jit_disabled),
    ("connection promoted", "connection.promoted", connection_promoted),
    ("connection demoted", "connection.demoted", connection_demoted),
    ("break-glass", "breakglass.used", breakglass),
]


@pytest.mark.parametrize(("words", "action", "step"), TABLE, ids=[row[0] for row in TABLE])
async def test_every_action_writes_exactly_one_audit_line(
    trail: Capture, words: str, action: str, step: Row
) -> None:
    await step(trail)
    assert trail.actions().count(action) == 1, trail.actions()
    line = next(line for line in trail.lines if line["action"] == action)
    assert line["schema"] == audit.AUDIT_SCHEMA and line["correlationId"], line
    assert line["target"]["kind"] and line["time"].endswith("Z")
    assert "redacted" not in line, line  # the services never hand a secret to the trail in the first place


@pytest.mark.parametrize(
    ("groups", "action", "phase"),
    [(["users"], "certificate.issued", "Issued"), (["outsiders"], "certificate.denied", "Denied")],
)
async def test_a_person_s_certificate_request_writes_one_line(
    trail: Capture, monkeypatch: pytest.MonkeyPatch, groups: list[str], action: str, phase: str
) -> None:
    status = await _request(trail, monkeypatch, groups)
    assert status["phase"] == phase
    assert trail.actions() == [action]
    line = trail.lines[0]
    assert (line["actor"], line["correlationId"]) == ("alice", "uid-r1")
    assert line["target"] == {"kind": "SSHCertificateRequest", "namespace": "team-a", "name": "r1"}


def test_the_table_covers_every_action_of_the_issue() -> None:
    wanted = {
        "token.issued",
        "token.refused",
        "certificate.issued",
        "certificate.denied",
        "checkout.granted",
        "checkout.denied",
        "checkout.queued",
        "checkout.checkin",
        "rotation.succeeded",
        "rotation.failed",
        "elevation.requested",
        "elevation.approved",
        "elevation.denied",
        "elevation.removed",
        "jit.enabled",
        "jit.disabled",
        "connection.promoted",
        "connection.demoted",
        "breakglass.used",
    }
    assert wanted <= {action for _, action, _ in TABLE} <= {a.value for a in audit.Action}


async def test_the_token_issued_line_names_the_workload_and_the_jti_never_the_token(trail: Capture) -> None:
    world = await TokenWorld("github").start()
    trail.mark()
    result = await world.exchange.exchange(form(world.issuer.mint("github")))
    line = trail.lines[0]
    assert line["actor"].startswith("workload:") and line["correlationId"] == result.jti
    assert result.access_token not in json.dumps(line)


async def test_a_refused_token_names_its_reason_code(trail: Capture) -> None:
    world = await TokenWorld("github").start()
    token = world.issuer.mint("github", exp=int(world.clock().timestamp()) - timedelta(hours=1).seconds)
    trail.mark()
    with pytest.raises(OAuthError) as refused:
        await world.exchange.exchange(form(token))
    line = trail.lines[0]
    assert line["reason"] == refused.value.outcome and line["outcome"] == "denied"
    assert token not in json.dumps(line)
