"""Checkout rules, table-driven: scope, durations, check-in triggers, rotation flags, elevation and
approvals, denial messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubepam.domain.checkout import (
    CheckinReason,
    Elevation,
    checkin_trigger,
    checkout_duration,
    denial_message,
    elevation_on_grant,
    object_name,
    parse_checkout_policy,
)
from kubepam.domain.errors import SpecError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = parse_checkout_policy(
    {
        "project": "p",
        "maxDuration": "30m",
        "elevation": {
            "eligibleAccounts": ["admin"],
            "privilegedGroups": ["edit"],
            "approvers": {"users": ["approver"], "groups": ["dba-leads"]},
            "approvalWindow": "15m",
        },
    }
)


@pytest.mark.parametrize(
    ("scope", "accounts", "account", "covered"),
    [
        ("All", [], "anything", True),
        ("Include", ["admin"], "admin", True),
        ("Include", ["admin"], "other", False),
        ("Exclude", ["admin"], "admin", False),
        ("Exclude", ["admin"], "other", True),
    ],
)
def test_scope(scope: str, accounts: list[str], account: str, covered: bool) -> None:
    assert (
        parse_checkout_policy({"project": "p", "scope": scope, "accounts": accounts}).covers(account)
        is covered
    )


@pytest.mark.parametrize(
    ("requested", "override", "expected"),
    [
        (None, None, timedelta(minutes=30)),  # default: the policy maximum
        (timedelta(minutes=5), None, timedelta(minutes=5)),
        (timedelta(hours=2), None, timedelta(minutes=30)),  # capped
        (None, timedelta(minutes=20), timedelta(minutes=20)),  # an AccessPolicy rule overrides the maximum
        (timedelta(hours=2), timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_duration(requested: timedelta | None, override: timedelta | None, expected: timedelta) -> None:
    assert checkout_duration(requested, POLICY.max_duration, override) == expected


@pytest.mark.parametrize(
    ("force", "requested", "expires", "expected"),
    [
        (False, False, T0 + timedelta(seconds=1), None),
        (False, False, T0, CheckinReason.EXPIRED),
        (False, True, T0 + timedelta(hours=1), CheckinReason.USER),
        (True, True, T0 + timedelta(hours=1), CheckinReason.FORCED),  # force wins
        (True, False, T0 - timedelta(hours=1), CheckinReason.FORCED),
    ],
)
def test_checkin_trigger(
    force: bool, requested: bool, expires: datetime, expected: CheckinReason | None
) -> None:
    assert checkin_trigger(force=force, requested=requested, expires_at=expires, now=T0) is expected


@pytest.mark.parametrize(
    ("rotation", "reason", "rotates"),
    [
        (
            {},
            CheckinReason.EXPIRED,
            True,
        ),  # Okta's defaults: expiry and force rotate, the holder's own does not
        ({}, CheckinReason.FORCED, True),
        ({}, CheckinReason.USER, False),
        ({"onUserCheckin": True}, CheckinReason.USER, True),
        ({"onExpiry": False}, CheckinReason.EXPIRED, False),
    ],
)
def test_rotation_flags(rotation: dict[str, Any], reason: CheckinReason, rotates: bool) -> None:
    assert parse_checkout_policy({"project": "p", "rotation": rotation}).rotates(reason) is rotates


@pytest.mark.parametrize(
    ("account", "requested", "approval", "state"),
    [
        ("other", True, True, Elevation.NOT_REQUIRED),
        ("admin", False, True, Elevation.NOT_REQUESTED),
        ("admin", True, True, Elevation.PENDING),
        ("admin", True, False, Elevation.APPROVED),
    ],
)
def test_elevation_on_grant(account: str, requested: bool, approval: bool, state: Elevation) -> None:
    assert elevation_on_grant(POLICY, account, requested, approval) is state


def test_denial_names_holder_and_time_left() -> None:
    message = denial_message("admin", "alice", T0 + timedelta(minutes=14, seconds=5), T0)
    assert message == "account admin is checked out by alice until 2026-01-01T12:14:05Z (14m5s left)"


def test_denial_after_the_holders_time_says_what_the_account_waits_for() -> None:
    past = T0 - timedelta(minutes=3)
    assert (
        denial_message("admin", "alice", past, T0, rotating=True)
        == "account admin is locked until its password rotation completes (alice's checkout has ended)"
    )
    assert (
        denial_message("admin", "alice", past, T0)
        == "account admin is locked until the check-in of alice's checkout completes"
    )
    assert "0s left" not in denial_message("admin", "alice", T0, T0)


def test_object_names_are_valid_and_distinct() -> None:
    a, b = object_name("proj", "account", "db_admin"), object_name("proj", "account", "db-admin")
    assert a != b and a.startswith("proj-account-db-admin-") and len(a) <= 63


def test_bad_policy() -> None:
    with pytest.raises(SpecError, match=r"spec\.maxDuration"):
        parse_checkout_policy({"project": "p", "maxDuration": "soon"})
