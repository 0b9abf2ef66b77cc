"""Approval rules on the real control plane: a two-stage checkout approval (security admins AND team
leads) where the API server refuses the requester's own vote and a second vote by the same person and
stamps who voted, the account handed out only after both stages with its window starting then; a denial
by one stage ends it; break-glass self-approval with a reason, a capped window, a Warning Event, a
flagged audit line and the Break-glass column; and an extension beyond what was approved going back to
the approvers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    kubectl_json,
    kubepam_object,
    team_namespace,
    wait_for,
)

NS = "approvals"
CLI = "import sys; from kubepam.cli import main; sys.exit(main(sys.argv[1:]))"
ACCOUNT = "ops_shared"


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return kubepam_object(kind, name, spec, NS)


@pytest.fixture(scope="module")
def world(plane: ControlPlane, operator: OperatorProcess) -> Iterator[OperatorProcess]:
    team_namespace(plane, NS)
    apply(
        plane,
        "devops",
        obj("Project", "ops", {"sharedAccounts": [{"name": ACCOUNT, "backend": "kubernetes"}]}),
        obj(
            "CheckoutPolicy",
            "ops",
            {
                "project": "ops",
                "maxDuration": "1h",
                "rotation": {"onUserCheckin": False},
                "checkout": {
                    "approval": {
                        "stages": [
                            {"name": "security", "groups": ["kubepam:security-admins"], "count": 1},
                            {"name": "leads", "groups": ["team-leads"], "count": 1},
                        ],
                        "pendingTTL": "10m",
                    }
                },
                "breakGlass": {"allowed": True, "minReasonLength": 20, "maxDuration": "2m"},
            },
        ),
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "shared", "projects": ["ops"], "accounts": ["*"]}],
            },
        ),
    )
    assert wait_for(plane, "devops", "project/ops", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "devops", "checkoutpolicy/ops", "condition=Ready", NS).returncode == 0
    yield operator


def status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return kubectl_json(plane, "admin", "get", "checkout", name, "-n", NS).get("status") or {}


def wait_until(plane: ControlPlane, name: str, test: Any, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(plane, name)
        if test(current) or time.monotonic() > deadline:
            assert test(current), current
            return current
        time.sleep(0.2)


def vote(
    plane: ControlPlane, name: str, who: str, groups: list[str], decision: str = "Approved", request: str = ""
) -> subprocess.CompletedProcess[str]:
    """An approver's vote as kubepam approve sends it: one JSON-patch append on the status subresource
    (as ``who`` in ``groups``, by impersonation, so the test can give people the groups a stage needs)."""
    request = request or status(plane, name)["approvalRequest"]["id"]
    patch = [
        {"op": "add", "path": "/status/approvals/-", "value": {"request": request, "decision": decision}}
    ]
    impersonate = ["--as", who, *(arg for g in groups for arg in ("--as-group", g))]
    return plane.kubectl(
        "admin",
        "patch",
        "checkout",
        name,
        "-n",
        NS,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(patch),
        *impersonate,
        check=False,
    )


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


SEC = ["kubepam:approvers", "kubepam:security-admins"]
LEAD = ["kubepam:approvers", "team-leads"]


def test_two_stages_both_needed_the_requester_and_a_second_vote_refused(
    plane: ControlPlane, world: OperatorProcess
) -> None:
    apply(
        plane,
        "alice",
        obj(
            "Checkout",
            "two",
            {"project": "ops", "account": ACCOUNT, "requester": "x", "reason": "r", "duration": "20m"},
        ),
    )
    pending = wait_until(plane, "two", lambda s: (s.get("approvalRequest") or {}).get("state") == "Pending")
    assert pending["phase"] == "Pending" and pending["approvalRequest"]["id"] == "checkout-1"
    assert "security 0/1, leads 0/1" in pending["message"]

    own = vote(plane, "two", "alice", ["kubepam:users", *SEC])
    assert own.returncode != 0 and "the requester cannot approve or deny their own request" in own.stderr
    ordinary = plane.kubectl(
        "alice",
        "patch",
        "checkout",
        "two",
        "-n",
        NS,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "add",
                    "path": "/status/approvals/-",
                    "value": {"request": "checkout-1", "decision": "Approved"},
                }
            ]
        ),
        check=False,
    )
    assert ordinary.returncode != 0  # RBAC: users cannot write status at all

    assert vote(plane, "two", "sam", SEC).returncode == 0
    again = vote(plane, "two", "sam", SEC)
    assert again.returncode != 0 and "sam already voted on checkout-1; one person counts once" in again.stderr
    wrong = vote(plane, "two", "lee", LEAD, request="checkout-7")
    assert wrong.returncode != 0 and "you can only vote on the open request checkout-1" in wrong.stderr
    half = wait_until(
        plane, "two", lambda s: "security 1/1" in (s.get("approvalRequest") or {}).get("message", "")
    )
    assert half["phase"] == "Pending" and "secretName" not in half
    stamped = half["approvals"][0]
    assert stamped["approver"] == "sam" and "kubepam:security-admins" in stamped["groups"]

    time.sleep(2)  # so a window counted from the request would differ from one counted from the approval
    assert vote(plane, "two", "lee", LEAD).returncode == 0
    active = wait_until(plane, "two", lambda s: s.get("phase") == "Active")
    decided = ts(active["approvalRequest"]["decidedAt"])
    assert ts(active["expiresAt"]) - decided == timedelta(minutes=20)
    assert decided - ts(active["approvalRequest"]["requestedAt"]) >= timedelta(seconds=2)
    assert {s["name"]: s["approvedBy"] for s in active["approvalRequest"]["stages"]} == {
        "security": ["sam"],
        "leads": ["lee"],
    }

    # more than approvers granted goes back to them; the expiry does not move meanwhile
    plane.kubectl(
        "alice", "patch", "checkout", "two", "-n", NS, "--type=merge", "-p", '{"spec":{"duration":"40m"}}'
    )
    asked = wait_until(plane, "two", lambda s: (s.get("approvalRequest") or {}).get("target") == "Extension")
    assert asked["approvalRequest"]["id"] == "extension-2" and asked["expiresAt"] == active["expiresAt"]
    assert vote(plane, "two", "sam", SEC).returncode == 0
    assert vote(plane, "two", "lee", LEAD).returncode == 0
    extended = wait_until(plane, "two", lambda s: s.get("approvedDuration") == "40m")
    assert ts(extended["expiresAt"]) - ts(extended["grantedAt"]) == timedelta(minutes=40)

    plane.kubectl(
        "alice",
        "patch",
        "checkout",
        "two",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"checkin":{"requested":true}}}',
    )
    wait_until(plane, "two", lambda s: s.get("phase") == "CheckedIn")
    late = vote(plane, "two", "april", LEAD)
    assert late.returncode != 0 and "nothing to approve" in late.stderr


def test_a_denial_by_one_stage_ends_the_request(plane: ControlPlane, world: OperatorProcess) -> None:
    apply(
        plane,
        "bob",
        obj("Checkout", "no", {"project": "ops", "account": ACCOUNT, "requester": "x", "reason": "r"}),
    )
    wait_until(plane, "no", lambda s: (s.get("approvalRequest") or {}).get("state") == "Pending")
    assert vote(plane, "no", "sam", SEC).returncode == 0
    assert vote(plane, "no", "lee", LEAD, "Denied").returncode == 0
    denied = wait_until(plane, "no", lambda s: s.get("phase") == "Denied")
    assert denied["approvalRequest"]["state"] == "Denied" and "denied by lee" in denied["message"]
    assert "secretName" not in denied


def test_break_glass_self_approves_capped_flagged_and_warned(
    plane: ControlPlane, world: OperatorProcess
) -> None:
    spec = {"project": "ops", "account": ACCOUNT, "requester": "x", "reason": "r", "duration": "1h"}
    short = apply(plane, "victor", obj("Checkout", "glass", {**spec, "breakGlass": {"reason": "urgent"}}))
    assert short.returncode == 0
    waiting = wait_until(plane, "glass", lambda s: "at least 20 characters" in s.get("message", ""))
    assert waiting["phase"] == "Pending"
    plane.kubectl(
        "victor",
        "patch",
        "checkout",
        "glass",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"breakGlass": {"reason": "payments DB is down, incident INC-4711, on call"}}}),
    )
    meddle = plane.kubectl(
        "secadmin",
        "patch",
        "checkout",
        "glass",
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"breakGlass": {"reason": "someone else's emergency, not mine"}}}),
        check=False,
    )
    assert meddle.returncode != 0 and "only the requester (victor)" in meddle.stderr
    active = wait_until(plane, "glass", lambda s: s.get("phase") == "Active")
    assert active["breakGlass"]["used"] is True and active["breakGlass"]["window"] == "2m"
    assert ts(active["expiresAt"]) - ts(active["grantedAt"]) <= timedelta(minutes=2)
    events = kubectl_json(plane, "admin", "get", "events", "-n", NS, "--field-selector", "reason=BreakGlass")[
        "items"
    ]
    assert (
        len(events) == 1  # the capped window is not then "extended" to what was asked by a second use
        and events[0]["type"] == "Warning"
        and "victor approved their own checkout" in events[0]["message"]
    )
    row = plane.kubectl("secadmin", "get", "checkout", "glass", "-n", NS).stdout
    assert "BREAK-GLASS" in row and "true" in row
    review = subprocess.run(  # a security admin's review: every break-glass use, across namespaces
        [sys.executable, "-c", CLI, "checkouts", "-A", "--break-glass"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig("secadmin"))},
        check=True,
    ).stdout.splitlines()
    assert "BREAK-GLASS" in review[0] and [line.split()[1] for line in review[1:]] == ["glass"], review
    audit = [
        json.loads(line[line.index("{") : line.rindex("}") + 1])
        for line in world.logs().splitlines()
        if '"action":"breakglass.used"' in line
    ]
    assert [(a["actor"], a["details"]["breakGlass"], a["target"]["name"]) for a in audit] == [
        ("victor", True, "glass")
    ], audit  # one line, flagged, naming who broke the glass
