"""Approval rules on the checkout service: stages that must all be met, one person counting once, denials,
requests that expire, break-glass self-approval with a capped window, and extensions beyond what was
approved going back to the approvers. The API server's part (stamping, refusing the requester and a
second vote) is tested on the real control plane in tests/e2e/test_approvals.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kubepam.domain.conditions import rfc3339
from tests.handlers.test_checkout_service import NS, World

TWO_STAGES = {
    "checkout": {
        "approval": {
            "stages": [
                {"name": "security", "groups": ["sec"], "count": 1},
                {"name": "leads", "groups": ["leads"], "count": 1},
            ],
            "pendingTTL": "30m",
        }
    },
    "breakGlass": {"allowed": True, "minReasonLength": 20, "maxDuration": "15m"},
}


def status_of(w: World, name: str) -> dict[str, Any]:
    return dict(w.objects.items[("checkouts", NS, name)].get("status") or {})


async def test_a_checkout_waits_for_every_stage_and_its_window_starts_at_the_final_approval() -> None:
    w = World(**TWO_STAGES)
    w.create("a", "alice", duration="20m")
    status = await w.step("a")
    assert status["phase"] == "Pending" and status["approvalRequest"]["id"] == "checkout-1"
    assert "security 0/1, leads 0/1" in status["message"]
    w.vote("a", "sam", "Approved", "sec", "leads")  # in both groups: counts once, for one stage
    status = await w.step("a")
    assert status["phase"] == "Pending" and "security 1/1, leads 0/1" in status["approvalRequest"]["message"]
    w.clock.advance(minutes=7)
    approved_at = w.clock()
    w.vote("a", "lee", "Approved", "sec")  # only sec: the matching moves sam to leads
    status = await w.step("a")
    assert status["phase"] == "Active"
    stages = {s["name"]: s["approvedBy"] for s in status["approvalRequest"]["stages"]}
    assert stages == {"security": ["lee"], "leads": ["sam"]}
    assert status["expiresAt"] == rfc3339(approved_at + timedelta(minutes=20))
    assert status["approvalRequest"]["decidedAt"] == rfc3339(approved_at)


async def test_the_requester_and_outsiders_never_count_and_a_denial_ends_the_request() -> None:
    w = World(**TWO_STAGES)
    w.create("a", "alice")
    await w.step("a")
    w.vote("a", "alice", "Approved", "sec", "leads")
    w.vote("a", "mallory", "Approved", "users")
    status = await w.step("a")
    message = status["approvalRequest"]["message"]
    assert status["phase"] == "Pending"
    assert "alice is the requester" in message and "mallory is not an approver for any stage" in message
    w.vote("a", "lee", "Denied", "leads")
    status = await w.step("a")
    assert status["phase"] == "Denied" and "denied by lee" in status["message"]
    assert status["approvalRequest"]["state"] == "Denied" and status["approvalRequest"]["deniedBy"] == ["lee"]
    assert not any(name.startswith("kubepam-checkout-") for (_, name) in w.secrets.items)  # never handed out


async def test_deny_count_needs_that_many_denials() -> None:
    policy = {"checkout": {"approval": {"stages": [{"groups": ["sec"], "count": 1}], "denyCount": 2}}}
    w = World(**policy)
    w.create("a", "alice")
    await w.step("a")
    w.vote("a", "s1", "Denied", "sec")
    assert (await w.step("a"))["phase"] == "Pending"
    w.vote("a", "s2", "Denied", "sec")
    assert (await w.step("a"))["phase"] == "Denied"


async def test_a_request_nobody_decides_expires_at_its_pending_ttl_from_the_scheduler() -> None:
    w = World(**TWO_STAGES)
    w.create("a", "alice")
    status = await w.step("a")
    assert w.scheduler.deadline(("checkouts", f"{NS}/a")) == w.clock() + timedelta(minutes=30)
    w.clock.advance(minutes=31)
    status = await w.step("a")
    assert status["phase"] == "Denied" and status["approvalRequest"]["state"] == "Expired"
    assert "not approved within 30m" in status["message"]


async def test_break_glass_self_approves_with_a_long_enough_reason_caps_the_window_and_is_flagged() -> None:
    w = World(**TWO_STAGES)
    w.create("a", "alice", duration="30m", breakGlass={"reason": "db down"})
    status = await w.step("a")
    assert status["phase"] == "Pending" and "at least 20 characters" in status["approvalRequest"]["message"]
    w.objects.items[("checkouts", NS, "a")]["spec"]["breakGlass"] = {
        "reason": "production database down, incident INC-4711"
    }
    status = await w.step("a")
    assert status["phase"] == "Active"
    assert status["breakGlass"]["used"] and status["breakGlass"]["window"] == "15m"
    assert status["approvalRequest"]["breakGlass"] and status["approvedDuration"] == "15m"
    assert status["expiresAt"] == rfc3339(w.clock() + timedelta(minutes=15))
    assert "BreakGlass" in w.events.warnings
    assert any(reason == "BreakGlass" and audit.get("breakGlass") for reason, audit in w.events.audits)


async def test_break_glass_is_refused_where_the_policy_does_not_allow_it() -> None:
    policy = {"checkout": TWO_STAGES["checkout"]}
    w = World(**policy)
    w.create("a", "alice", breakGlass={"reason": "production database down, incident INC-4711"})
    status = await w.step("a")
    assert (
        status["phase"] == "Pending" and "break-glass is not allowed" in status["approvalRequest"]["message"]
    )
    assert "breakGlass" not in status


async def test_break_glass_elevation_window_is_capped() -> None:
    w = World(breakGlass={"allowed": True, "minReasonLength": 5, "maxDuration": "2m"})
    w.create("a", "alice", elevation={"requested": True}, breakGlass={"reason": "pager fired"})
    status = await w.step("a")
    assert status["elevation"]["state"] == "ELEVATED" and status["breakGlass"]["target"] == "Elevation"
    assert status["elevation"]["expiresAt"] == rfc3339(w.clock() + timedelta(minutes=2))


async def test_asking_for_more_than_was_approved_goes_back_to_the_approvers() -> None:
    w = World(**TWO_STAGES)
    w.create("a", "alice", duration="10m")
    await w.step("a")
    w.vote("a", "sam", "Approved", "sec")
    w.vote("a", "lee", "Approved", "leads")
    status = await w.step("a")
    granted_expiry = status["expiresAt"]
    assert status["phase"] == "Active" and status["approvedDuration"] == "10m"
    w.objects.items[("checkouts", NS, "a")]["spec"]["duration"] = "18m"
    status = await w.step("a")
    assert status["expiresAt"] == granted_expiry  # not extended yet
    assert status["approvalRequest"]["id"] == "extension-2" and status["approvalRequest"]["duration"] == "18m"
    w.vote("a", "sam", "Approved", "sec")
    w.vote("a", "lee", "Denied", "leads")
    status = await w.step("a")
    assert status["expiresAt"] == granted_expiry and "keeps its expiry" in status["message"]
    assert status["phase"] == "Active"
