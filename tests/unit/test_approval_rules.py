"""Approval counting as a table: stages that must all be met, one person counting once (even in
several groups), the requester and outsiders never counting, denyCount, pendingTTL, the earlier
single-approver rule, break-glass reasons and caps, and whose vote the console may offer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubepam.domain.approvals import (
    State,
    Vote,
    break_glass_problem,
    capped,
    elevation_rule,
    tally,
    votes_of,
    would_count,
)
from kubepam.domain.checkout import ApprovalRule, BreakGlass, Stage, parse_checkout_policy

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SEC = Stage("security", frozenset({"sec"}), frozenset(), 1)
LEADS = Stage("leads", frozenset({"leads"}), frozenset({"lee"}), 1)
TWO = ApprovalRule((SEC, LEADS), deny_count=1, pending_ttl=timedelta(hours=1))
TWO_OF_SEC = ApprovalRule((Stage("security", frozenset({"sec"}), frozenset(), 2),), deny_count=2)


def v(approver: str, decision: str = "Approved", *groups: str, request: str = "r-1") -> Vote:
    return Vote(request, approver, frozenset(groups), decision)


@pytest.mark.parametrize(
    ("rule", "votes", "state", "note"),
    [
        (TWO, [], State.PENDING, "security 0/1, leads 0/1"),
        (TWO, [v("sam", "Approved", "sec")], State.PENDING, "security 1/1, leads 0/1"),
        (TWO, [v("sam", "Approved", "sec"), v("lee")], State.APPROVED, "approved by sam, lee"),
        # one person in both groups fills one stage only
        (TWO, [v("sam", "Approved", "sec", "leads")], State.PENDING, "security 1/1, leads 0/1"),
        # ... and is moved to the stage nobody else can fill (maximum matching, not first come)
        (
            TWO,
            [v("sam", "Approved", "sec", "leads"), v("sue", "Approved", "sec")],
            State.APPROVED,
            "approved",
        ),
        (TWO, [v("alice", "Approved", "sec", "leads")], State.PENDING, "alice is the requester"),
        (TWO, [v("mallory", "Approved", "users")], State.PENDING, "mallory is not an approver for any stage"),
        (TWO, [v("sam", "Approved", "sec"), v("sam", "Approved", "sec")], State.PENDING, "already decided"),
        (TWO, [v("sam", "Approved", "sec"), v("lee", "Approved", request="r-0")], State.PENDING, "leads 0/1"),
        (TWO, [v("lee", "Denied")], State.DENIED, "denied by lee"),
        (TWO, [v("mallory", "Denied", "users")], State.PENDING, "not an approver"),  # outsiders cannot deny
        (TWO_OF_SEC, [v("s1", "Approved", "sec")], State.PENDING, "security 1/2"),
        (TWO_OF_SEC, [v("s1", "Approved", "sec"), v("s2", "Approved", "sec")], State.APPROVED, "s1, s2"),
        (TWO_OF_SEC, [v("s1", "Denied", "sec")], State.PENDING, "security 0/2"),
        (TWO_OF_SEC, [v("s1", "Denied", "sec"), v("s2", "Denied", "sec")], State.DENIED, "s1, s2"),
    ],
)
def test_tally(rule: ApprovalRule, votes: list[Vote], state: State, note: str) -> None:
    result = tally(rule, votes, request="r-1", requester="alice", requested_at=T0, now=T0)
    assert result.state is state and note in result.message


def test_a_request_expires_at_its_pending_ttl_unless_already_decided() -> None:
    late = T0 + timedelta(hours=1)
    assert tally(TWO, [], request="r-1", requester="a", requested_at=T0, now=late).state is State.EXPIRED
    done = [v("sam", "Approved", "sec"), v("lee")]
    assert tally(TWO, done, request="r-1", requester="a", requested_at=T0, now=late).state is State.APPROVED


def test_without_stages_elevation_keeps_the_single_approver_rule() -> None:
    policy = parse_checkout_policy(
        {"project": "p", "elevation": {"approvers": {"users": ["approver"], "groups": ["dba-leads"]}}}
    )
    rule = elevation_rule(policy, frozenset({"rule-user"}), frozenset())
    (stage,) = rule.stages
    assert stage.count == 1 and stage.users == {"approver", "rule-user"} and stage.groups == {"dba-leads"}
    anyone = elevation_rule(parse_checkout_policy({"project": "p"}), frozenset(), frozenset())
    assert anyone.stages[0].groups == {"kubepam:approvers"}
    staged = parse_checkout_policy(
        {"project": "p", "elevation": {"approval": {"stages": [{"groups": ["sec"], "count": 2}]}}}
    )
    assert elevation_rule(staged, frozenset({"x"}), frozenset()).stages[0].count == 2


@pytest.mark.parametrize(
    ("glass", "reason", "problem"),
    [
        (BreakGlass(False), "production is down and nobody answers", "not allowed"),
        (BreakGlass(True, 20), "db down", "at least 20 characters (got 7)"),
        (BreakGlass(True, 20), "   " + "x" * 19 + "   ", "got 19"),
        (BreakGlass(True, 20), "production is down and nobody answers", ""),
    ],
)
def test_break_glass_reasons(glass: BreakGlass, reason: str, problem: str) -> None:
    found = break_glass_problem(glass, reason, "db")
    assert (problem in found and found) if problem else found == ""


def test_break_glass_caps_only_its_own_window() -> None:
    glass = BreakGlass(True, 5, timedelta(minutes=15))
    assert capped(timedelta(hours=1), glass, True) == timedelta(minutes=15)
    assert capped(timedelta(minutes=5), glass, True) == timedelta(minutes=5)
    assert capped(timedelta(hours=1), glass, False) == timedelta(hours=1)


@pytest.mark.parametrize(
    ("approver", "groups", "counts", "why"),
    [
        ("alice", ["sec"], False, "your own request"),
        ("sam", ["sec"], False, "already voted"),
        ("mallory", ["users"], False, "not an approver"),
        ("sue", ["sec", "leads"], True, "security, leads"),
    ],
)
def test_would_count(approver: str, groups: list[str], counts: bool, why: str) -> None:
    ok, note = would_count(
        TWO, request="r-1", approver=approver, groups=frozenset(groups), requester="alice", votes=[v("sam")]
    )
    assert ok is counts and why in note


def test_unstamped_votes_are_not_read() -> None:
    raw = [
        {"request": "r-1", "decision": "Approved"},
        {"request": "r-1", "decision": "Denied", "approver": "b"},
    ]
    assert [x.approver for x in votes_of(raw)] == ["b"] and votes_of(None) == []
