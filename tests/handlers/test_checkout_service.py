"""The checkout service against fakes: grant, exclusivity, check-in paths with and without rotation,
expiry through the scheduler, elevation with approval and its window, and retries when a step fails."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from kubepam.adapters import postgres
from kubepam.domain.checkout import parse_checkout_policy
from kubepam.domain.policy import parse_policy
from kubepam.domain.project import parse_project
from kubepam.services.accounts import Accounts
from kubepam.services.checkouts import CheckoutService, credential_secret_name, elevation_binding_name
from kubepam.services.scheduler import Scheduler
from tests.handlers.fakes import Clock, FakeEvents, FakeLeases, FakeObjects, FakeRbac, FakeSecrets

NS = "team"
APPS = "team-apps"  # where elevation binds: never the namespace that holds the keys and passwords
SECRET_A = credential_secret_name("a", "uid-a")


class Dir:
    def __init__(self, **policy: Any) -> None:
        self._project = replace(
            parse_project({"sharedAccounts": [{"name": "admin", "backend": "kubernetes"}]}), uid="project-uid"
        )
        self._checkout_policy = parse_checkout_policy(
            {
                "project": "p",
                "maxDuration": "30m",
                "elevation": {
                    "eligibleAccounts": ["admin"],
                    "privilegedGroups": ["edit"],
                    "namespaces": [APPS],
                    "approvalWindow": "10m",
                },
                **policy,
            }
        )
        self._policies = [
            parse_policy(
                NS,
                "people",
                {
                    "principals": {"groups": ["users"]},
                    "rules": [
                        {
                            "name": "r",
                            "projects": ["p"],
                            "accounts": ["*"],
                            "checkoutDuration": "20m",
                            "elevation": {"allowed": True, "approvers": {"users": ["approver"]}},
                        }
                    ],
                },
            )
        ]

    def policies(self, namespace: str) -> list[Any]:
        return self._policies

    def project(self, namespace: str, name: str) -> Any:
        return self._project if name == "p" else None

    def project_uid(self, namespace: str, name: str) -> str:
        return "project-uid"

    def checkout_policy(self, namespace: str, project: str) -> Any:
        return self._checkout_policy if project == "p" else None


class World:
    def __init__(self, **policy: Any) -> None:
        """``policy``: CheckoutPolicy spec fields over the default one."""
        self.clock = Clock()
        self.objects, self.secrets, self.rbac = FakeObjects(), FakeSecrets(), FakeRbac()
        self.leases, self.events = FakeLeases(), FakeEvents()
        self.accounts = Accounts(self.secrets, self.clock)
        self.scheduler = Scheduler(self.clock)
        self.service = CheckoutService(
            Dir(**policy),
            self.objects,
            self.leases,
            self.secrets,
            self.rbac,  # type: ignore[arg-type]
            self.accounts,
            self.scheduler,
            self.events,
            self.clock,
        )

    def create(self, name: str, requester: str, **spec: Any) -> None:
        self.objects.add(
            "checkouts",
            {
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "project": "p",
                    "account": "admin",
                    "requester": requester,
                    "groups": ["users"],
                    "reason": "r",
                    **spec,
                },
            },
        )

    def vote(self, name: str, approver: str, decision: str, *groups: str, request: str = "") -> None:
        """What the API server stores for an approver's appended vote (it stamps approver and groups)."""
        status = self.objects.items[("checkouts", NS, name)].setdefault("status", {})
        status.setdefault("approvals", []).append(
            {
                "request": request or status["approvalRequest"]["id"],
                "decision": decision,
                "approver": approver,
                "groups": list(groups),
            }
        )

    async def step(self, name: str) -> dict[str, Any]:
        await self.service.reconcile(NS, name)
        return dict((await self.objects.get("checkouts", NS, name) or {}).get("status") or {})

    def password(self) -> str:
        return (
            self.secrets.items[(NS, next(n for (_, n) in self.secrets.items if "account" in n))]
            .data["password"]
            .decode()
        )


async def test_grant_is_exclusive_and_delivers_a_secret_only_the_holder_reads() -> None:
    w = World()
    w.create("a", "alice")
    status = await w.step("a")
    assert status["phase"] == "Active" and status["holder"] == "alice"
    assert status["secretName"] == SECRET_A == "kubepam-checkout-a-uid-a"
    assert w.rbac.readers[(NS, SECRET_A)] == "alice"
    assert w.secrets.items[(NS, SECRET_A)].data["username"] == b"admin"
    expires = status["expiresAt"]
    assert expires == (w.clock.now + timedelta(minutes=20)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )  # the rule's override
    w.create("b", "bob")
    denied = await w.step("b")
    assert denied["phase"] == "Denied" and f"checked out by alice until {expires}" in denied["message"]
    assert [c["status"] for c in denied["conditions"] if c["type"] == "Stalled"] == ["True"]
    assert ("a", "CheckedOut") in [(n, r) for n, r, _ in w.events.seen]


async def test_user_checkin_does_not_rotate_forced_does() -> None:
    w = World()
    w.create("a", "alice")
    await w.step("a")
    first = w.password()
    w.objects.items[("checkouts", NS, "a")]["spec"]["checkin"] = {"requested": True}
    done = await w.step("a")
    assert done["phase"] == "CheckedIn" and done["checkinReason"] == "User" and w.password() == first
    assert (NS, SECRET_A) not in w.secrets.items and (NS, SECRET_A) not in w.rbac.readers
    assert w.leases.held == {}
    w.create("b", "bob")
    await w.step("b")
    w.objects.items[("checkouts", NS, "b")]["spec"]["checkin"] = {"force": True}
    forced = await w.step("b")
    assert forced["checkinReason"] == "Forced" and forced["rotation"]["completedAt"] and w.password() != first


async def test_expiry_fires_from_the_scheduler_and_rotates() -> None:
    w = World()
    w.create("a", "alice", duration="30s")
    status = await w.step("a")
    first = w.password()
    assert w.scheduler.deadline(("checkouts", f"{NS}/a")) is not None
    w.clock.advance(seconds=31)
    runner = asyncio.create_task(w.scheduler.run())
    for _ in range(50):
        await asyncio.sleep(0.01)
        status = dict(w.objects.items[("checkouts", NS, "a")]["status"])
        if status["phase"] == "Expired":
            break
    runner.cancel()
    assert status["phase"] == "Expired" and w.password() != first


async def test_elevation_waits_for_a_real_approver_then_ends_with_its_window() -> None:
    w = World()
    w.create("a", "alice", elevation={"requested": True})
    status = await w.step("a")
    assert status["elevation"]["state"] == "PENDING" and status["approvalRequest"]["id"] == "elevation-1"
    w.vote("a", "alice", "Approved")
    status = await w.step("a")
    assert (
        status["elevation"]["state"] == "PENDING"
        and "not counted: alice is the requester" in status["approvalRequest"]["message"]
    )
    w.vote("a", "mallory", "Approved")
    assert "mallory is not an approver" in (await w.step("a"))["approvalRequest"]["message"]
    w.vote("a", "approver", "Approved")
    status = await w.step("a")
    assert status["elevation"]["state"] == "ELEVATED" and w.rbac.bindings[
        (APPS, elevation_binding_name("a", "uid-a"))
    ] == ("edit",)
    w.clock.advance(minutes=11)
    status = await w.step("a")
    assert (
        status["elevation"]["state"] == "REMOVED"
        and (APPS, elevation_binding_name("a", "uid-a")) not in w.rbac.bindings
    )


async def test_a_failing_rotation_keeps_the_account_locked_and_is_retried() -> None:
    w = World()
    w.create("a", "alice", duration="30s")
    await w.step("a")
    real_rotate, calls = w.accounts.rotate, []

    async def failing(account: Any) -> None:
        calls.append(1)
        raise postgres.BackendError("postgresql db:5432: OperationalError: connection refused")

    w.accounts.rotate = failing  # type: ignore[method-assign]
    w.clock.advance(seconds=31)
    status = await w.step("a")
    assert status["phase"] == "CheckinInProgress" and "connection refused" in status["rotation"]["lastError"]
    assert w.leases.held  # still locked
    retry_at = w.scheduler.deadline(("checkouts", f"{NS}/a"))
    assert retry_at is not None and retry_at > w.clock.now
    status = await w.step("a")
    assert status["rotation"]["attempts"] == 2
    w.accounts.rotate = real_rotate  # type: ignore[method-assign]
    status = await w.step("a")
    assert status["phase"] == "Expired" and not w.leases.held and len(calls) == 2
    assert sum(1 for _, r, _ in w.events.seen if r == "RetryScheduled") == 2


async def test_a_missing_project_is_waited_for_then_reported() -> None:
    w = World()
    w.objects.add(
        "checkouts",
        {
            "metadata": {
                "name": "early",
                "namespace": NS,
                "creationTimestamp": w.clock.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": {
                "project": "later",
                "account": "admin",
                "requester": "alice",
                "groups": ["users"],
                "reason": "r",
            },
        },
    )
    status = await w.step("early")
    assert "phase" not in status and status["message"] == "waiting: no Project team/later"
    assert w.scheduler.deadline(("checkouts", f"{NS}/early")) is not None  # looks again shortly
    w.clock.advance(seconds=61)  # applied together would have arrived by now: the denial is final
    status = await w.step("early")
    assert status["phase"] == "Denied" and status["message"] == "no Project team/later"


async def test_a_checkout_refused_while_the_rotation_waits_says_so() -> None:
    w = World()
    w.create("a", "alice", duration="30s")
    await w.step("a")

    async def failing(account: Any) -> None:
        raise postgres.BackendError("postgresql db:5432: OperationalError: connection refused")

    w.accounts.rotate = failing  # type: ignore[method-assign]
    w.clock.advance(seconds=31)
    assert (await w.step("a"))["phase"] == "CheckinInProgress"
    w.create("b", "bob")
    denied = await w.step("b")
    assert denied["phase"] == "Denied"
    assert denied["message"] == (
        "account admin is locked until its password rotation completes (alice's checkout has ended)"
    )


async def test_a_duration_out_of_range_is_denied_with_the_field_not_retried() -> None:
    w = World()
    w.create("a", "alice", duration="999999999999999h")  # stored before the CRD bounded it
    status = await w.step("a")
    assert status["phase"] == "Denied" and status["message"].startswith("spec.duration: ")
    assert "87600h" in status["message"] and not w.leases.held
    assert [c["status"] for c in status["conditions"] if c["type"] == "Stalled"] == ["True"]


async def test_a_new_leader_arms_every_listed_deadline_before_resuming_objects_one_by_one() -> None:
    w = World()
    w.create("a", "alice", duration="30s")
    w.create("b", "bob")
    await w.step("a")
    await w.step("b")  # denied: the account is held; nothing to wait for
    listed = [w.objects.items[("checkouts", NS, n)] for n in ("a", "b")]
    after = World()  # another replica: same objects, nothing in its scheduler yet
    after.objects, after.service._objects = w.objects, w.objects
    assert await after.service.arm_listed() == 1 and await after.service.arm_listed() == 0  # once
    assert after.service.rearm(listed) == 0  # already armed
    expires = listed[0]["status"]["expiresAt"]
    assert after.scheduler.deadline(("checkouts", f"{NS}/a")) == after.service.due(listed[0])
    assert after.service.due(listed[0]).strftime("%Y-%m-%dT%H:%M:%SZ") == expires  # type: ignore[union-attr]
    assert after.scheduler.deadline(("checkouts", f"{NS}/b")) is None


async def test_a_failed_list_at_leadership_start_arms_nothing_and_is_not_fatal() -> None:
    from kubepam.adapters.kube import KubeError

    w = World()

    async def refused(plural: str) -> Any:
        raise KubeError(403, "Forbidden", "list checkouts")
        yield []  # an async generator, as the adapter's is

    w.objects.pages = refused  # type: ignore[method-assign]
    assert await w.service.arm_listed() == 0  # the resume handlers arm them later
