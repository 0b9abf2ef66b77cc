"""The console's rules, table-driven: the request page's dry-run verdict (the operator's own checkout and
JIT rules) and the history rows, filters and CSV-safe export fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubepam.domain import history, verdicts

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NS = "team-a"


def kobj(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = {"kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


PROJECT = kobj(
    "Project",
    "payments",
    {
        "sharedAccounts": [{"name": "payments_admin"}, {"name": "reports"}],
        "jit": {
            "enabled": True,
            "allowedGroups": ["view"],
            "creators": {"groups": ["kubepam:users"]},
            "maxDuration": "2h",
            "namespaces": ["team-a-apps"],
        },
    },
)
POLICY = kobj(
    "CheckoutPolicy",
    "payments",
    {
        "project": "payments",
        "scope": "Include",
        "accounts": ["payments_admin"],
        "maxDuration": "30m",
        "elevation": {"eligibleAccounts": ["payments_admin"], "privilegedGroups": ["edit"]},
    },
)


def access(rule: dict[str, Any]) -> dict[str, Any]:
    return kobj(
        "AccessPolicy",
        "people",
        {
            "principals": {"groups": ["kubepam:users"]},
            "rules": [{"name": "r", "projects": ["payments"], **rule}],
        },
    )


HELD = kobj(
    "Checkout",
    "x",
    {"project": "payments", "account": "payments_admin", "requester": "alice"},
    {"phase": "Active", "holder": "alice", "expiresAt": "2026-11-22T12:10:00Z"},
)


CHECKOUT_CASES = [
    # (case, account, rule, checkouts, duration, elevate, allowed, text in message, duration, approval)
    (
        "allowed at the maximum",
        "payments_admin",
        {"accounts": ["*"]},
        [],
        "",
        False,
        True,
        "for 30m",
        "30m",
        False,
    ),
    (
        "a shorter request",
        "payments_admin",
        {"accounts": ["*"]},
        [],
        "10m",
        False,
        True,
        "for 10m",
        "10m",
        False,
    ),
    (
        "capped at the maximum",
        "payments_admin",
        {"accounts": ["*"]},
        [],
        "2h",
        False,
        True,
        "for 30m",
        "30m",
        False,
    ),
    (
        "a rule override wins",
        "payments_admin",
        {"accounts": ["*"], "checkoutDuration": "1h"},
        [],
        "",
        False,
        True,
        "for 1h",
        "1h",
        False,
    ),
    (
        "held by another",
        "payments_admin",
        {"accounts": ["*"]},
        [HELD],
        "",
        False,
        False,
        "checked out by alice until 2026-11-22T12:10:00Z (10m left)",
        "",
        False,
    ),
    (
        "no policy covers it",
        "reports",
        {"accounts": ["*"]},
        [],
        "",
        False,
        False,
        "no CheckoutPolicy of project payments covers account reports",
        "",
        False,
    ),
    (
        "unknown account",
        "nope",
        {"accounts": ["*"]},
        [],
        "",
        False,
        False,
        "has no shared account nope",
        "",
        False,
    ),
    (
        "no rule names the account",
        "payments_admin",
        {"accounts": ["other"]},
        [],
        "",
        False,
        False,
        "",
        "",
        False,
    ),
    (
        "elevation needs approval",
        "payments_admin",
        {"accounts": ["*"], "elevation": {"allowed": True}},
        [],
        "",
        True,
        True,
        "for 30m",
        "30m",
        True,
    ),
    (
        "elevation without approval",
        "payments_admin",
        {"accounts": ["*"], "elevation": {"allowed": True, "requiresApproval": False}},
        [],
        "",
        True,
        True,
        "",
        "30m",
        False,
    ),
    (
        "a bad duration",
        "payments_admin",
        {"accounts": ["*"]},
        [],
        "soon",
        False,
        False,
        "duration:",
        "",
        False,
    ),
]


@pytest.mark.parametrize(
    ("account", "rule", "checkouts", "duration", "elevate", "allowed", "text", "length", "approval"),
    [c[1:] for c in CHECKOUT_CASES],
    ids=[c[0] for c in CHECKOUT_CASES],
)
def test_checkout_verdict(
    account: str,
    rule: dict[str, Any],
    checkouts: list[dict[str, Any]],
    duration: str,
    elevate: bool,
    allowed: bool,
    text: str,
    length: str,
    approval: bool,
) -> None:
    v = verdicts.checkout_verdict(
        namespace=NS,
        project=PROJECT,
        checkout_policies=[POLICY],
        access=[access(rule)],
        checkouts=checkouts,
        username="bob",
        groups=frozenset({"kubepam:users"}),
        account=account,
        duration=duration,
        elevate=elevate,
        now=NOW,
    )
    assert v.allowed is allowed, v
    assert text in v.message, v
    assert v.duration == length
    assert v.needs_approval is approval


JIT_CASES = [
    (
        "allowed",
        {"groups": ["view"], "duration": "1h", "reason": "debug"},
        "alice",
        None,
        True,
        "enabled for 1h",
    ),
    (
        "a group not allowed",
        {"groups": ["edit"], "duration": "1h", "reason": "debug"},
        "alice",
        None,
        False,
        "not in project payments's allowed JIT groups",
    ),
    (
        "over the maximum",
        {"groups": ["view"], "duration": "3h", "reason": "debug"},
        "alice",
        None,
        False,
        "exceeds project payments's maximum 2h",
    ),
    (
        "someone else's",
        {"groups": ["view"], "duration": "1h", "reason": "debug", "owner": "bob"},
        "alice",
        None,
        False,
        "may only create JIT accounts they own",
    ),
    (
        "same reason to re-enable",
        {"groups": ["view"], "duration": "1h", "reason": "debug"},
        "alice",
        {"status": {"phase": "Disabled", "history": [{"reason": "debug"}]}},
        False,
        "takes a new reason",
    ),
    (
        "re-enabled with a new reason",
        {"groups": ["view"], "duration": "1h", "reason": "again"},
        "alice",
        {"status": {"phase": "Disabled", "history": [{"reason": "debug"}]}},
        True,
        "re-enabled for 1h",
    ),
]


@pytest.mark.parametrize(
    ("spec", "who", "existing", "allowed", "text"), [c[1:] for c in JIT_CASES], ids=[c[0] for c in JIT_CASES]
)
def test_jit_verdict(
    spec: dict[str, Any], who: str, existing: dict[str, Any] | None, allowed: bool, text: str
) -> None:
    full = {"project": "payments", "owner": who, **spec}
    v = verdicts.jit_verdict(
        namespace=NS,
        project=PROJECT,
        spec=full,
        username=who,
        groups=frozenset({"kubepam:users"}),
        existing=existing,
    )
    assert v.allowed is allowed, v
    assert text in v.message, v


FINISHED = kobj(
    "Checkout",
    "y",
    {
        "project": "payments",
        "account": "payments_admin",
        "requester": "alice",
        "reason": "INC-1",
        "elevation": {"requested": True, "reason": "fix"},
    },
    {
        "phase": "CheckedIn",
        "grantedAt": "2026-11-22T11:00:00Z",
        "expiresAt": "2026-11-22T11:30:00Z",
        "checkinReason": "Forced",
        "elevation": {"state": "REMOVED"},
        "approvalRequest": {
            "id": "elevation-1",
            "target": "Elevation",
            "round": 1,
            "state": "Approved",
            "requestedAt": "2026-11-22T11:02:00Z",
            "decidedAt": "2026-11-22T11:03:00Z",
            "stages": [{"name": "approvers", "count": 1, "approvedBy": ["approver"]}],
        },
        "approvals": [
            {
                "request": "elevation-1",
                "decision": "Approved",
                "comment": "ok",
                "approver": "approver",
                "groups": ["kubepam:approvers"],
            }
        ],
        "rotation": {"required": True, "completedAt": "2026-11-22T11:10:05Z"},
        "conditions": [{"type": "Ready", "lastTransitionTime": "2026-11-22T11:10:00Z"}],
    },
)
JIT = kobj(
    "JitAccount",
    "alice",
    {"project": "payments", "owner": "alice"},
    {
        "accountName": "alice_jit",
        "history": [
            {
                "by": "alice",
                "reason": "=cmd()",
                "groups": ["view"],
                "from": "2026-11-22T09:00:00Z",
                "until": "2026-11-22T10:00:00Z",
            }
        ],
    },
)


def test_history_rows_tell_the_whole_story_newest_first() -> None:
    rows = history.history([FINISHED], [JIT])
    assert [(r.kind, r.who) for r in rows] == [
        ("rotation", "kubepam"),
        ("checkin", "alice"),
        ("approval", "approver"),
        ("elevation", "alice"),
        ("checkout", "alice"),
        ("jit", "alice"),
    ]
    assert rows[1].detail == "Forced" and rows[2].detail == "Approved elevation-1 for alice: ok"
    assert rows[2].time == "2026-11-22T11:03:00Z", "a vote on the last request: when it was decided"


@pytest.mark.parametrize(
    ("kind", "text", "count"),
    [("", "", 6), ("jit", "", 1), ("", "APPROVER", 1), ("checkin", "forced", 1), ("checkout", "nothing", 0)],
)
def test_history_filters(kind: str, text: str, count: int) -> None:
    assert len(history.select(history.history([FINISHED], [JIT]), kind=kind, text=text)) == count


GLASS = kobj(
    "Checkout",
    "w",
    {
        "project": "payments",
        "account": "payments_admin",
        "requester": "alice",
        "reason": "INC-9",
        "elevation": {"requested": True, "reason": "restart"},
        "breakGlass": {"reason": "payments down, approvers asleep"},
    },
    {
        "phase": "Active",
        "grantedAt": "2026-11-22T11:00:00Z",
        "expiresAt": "2026-11-22T11:30:00Z",
        "elevation": {"state": "ELEVATED", "request": "elevation-2"},
        "approvalRequest": {
            "id": "elevation-2",
            "target": "Elevation",
            "round": 2,
            "state": "Approved",
            "breakGlass": True,
            "requestedAt": "2026-11-22T11:05:00Z",
            "decidedAt": "2026-11-22T11:06:00Z",
        },
        "approvals": [
            {"request": "checkout-1", "decision": "Approved", "comment": "fine", "approver": "sec"},
            {"request": "checkout-1", "decision": "Approved", "approver": "lead", "groups": ["leads"]},
            {"request": "elevation-2", "decision": "Denied", "comment": "no", "approver": "bob"},
            {"request": "elevation-2", "decision": "Approved"},  # never stamped by the API server: no vote
        ],
        "breakGlass": {"used": True, "at": "2026-11-22T11:06:00Z", "target": "Elevation", "window": "15m"},
    },
)


def test_history_has_a_row_per_vote_and_one_for_break_glass() -> None:
    rows = history.history([GLASS], [])
    assert [(r.time[11:16], r.kind, r.who) for r in rows] == [
        ("11:06", "breakglass", "alice"),
        ("11:06", "approval", "bob"),  # on the current request: placed when it was decided
        ("11:00", "approval", "sec"),  # on an earlier request: with the grant
        ("11:00", "approval", "lead"),
        ("11:00", "elevation", "alice"),
        ("11:00", "checkout", "alice"),
    ]
    details = [r.detail for r in rows]
    assert details[:4] == [
        "approved their own elevation, window capped at 15m; reason: payments down, approvers asleep",
        "Denied elevation-2 for alice: no",
        "Approved checkout-1 for alice: fine",
        "Approved checkout-1 for alice",
    ]
    assert [r.who for r in history.select(rows, kind="breakglass")] == ["alice"]
    assert len(history.select(rows, kind="approval")) == 3
    assert "breakglass" in history.KINDS


def test_a_checkout_refused_by_approvers_shows_who_refused() -> None:
    refused = kobj(
        "Checkout",
        "v",
        {"project": "p", "account": "a", "requester": "bob"},
        {
            "phase": "Denied",
            "message": "checkout denied by sec",
            "approvalRequest": {"id": "checkout-1", "state": "Denied", "decidedAt": "2026-11-22T11:07:00Z"},
            "approvals": [
                {"request": "checkout-1", "decision": "Denied", "comment": "use JIT", "approver": "sec"}
            ],
        },
    )
    refused["metadata"]["creationTimestamp"] = "2026-11-22T11:05:00Z"
    assert [(r.kind, r.who, r.detail) for r in history.history([refused], [])] == [
        ("approval", "sec", "Denied checkout-1 for bob: use JIT"),
        ("denied", "bob", "checkout denied by sec"),
    ]


def test_a_denied_checkout_is_one_row_with_its_reason() -> None:
    denied = kobj(
        "Checkout",
        "z",
        {"project": "p", "account": "a", "requester": "bob"},
        {"phase": "Denied", "message": "held by alice"},
    )
    denied["metadata"]["creationTimestamp"] = "2026-11-22T11:05:00Z"
    assert [(r.kind, r.who, r.detail) for r in history.checkout_rows(denied)] == [
        ("denied", "bob", "held by alice")
    ]
