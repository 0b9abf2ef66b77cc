"""Shared-account checkout rules: which accounts need an exclusive checkout, for how long, when a
check-in rotates the password, and the elevation state machine (Okta PAM checkout + Imprivata JIT
elevation). Pure: the service supplies ``now`` and carries out the steps.

Phases:      Pending -> Active | Denied;  Active -> CheckinInProgress -> CheckedIn | Expired
             Pending -> Queued -> Offered -> Active | Expired;  Queued | Offered -> Cancelled
             (the waiting line: domain/queue.py)
Elevation:   NOT_REQUIRED (account not eligible) | NOT_REQUESTED -> PENDING -> APPROVED -> ELEVATED
             -> REMOVED;  PENDING -> DENIED;  APPROVED/ELEVATED -> REMOVED at check-in or window end
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubepam.domain.durations import duration_field, format_duration
from kubepam.domain.errors import SpecError

MIN_DURATION = timedelta(seconds=10)
MAX_DURATION = timedelta(hours=24)


class Phase(enum.StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    DENIED = "Denied"
    CHECKIN = "CheckinInProgress"
    CHECKED_IN = "CheckedIn"
    EXPIRED = "Expired"
    QUEUED = "Queued"  # waiting in the account's line (spec.queue)
    OFFERED = "Offered"  # first in line: the account is theirs to claim until status.offer.expiresAt
    CANCELLED = "Cancelled"  # left the line (check-in requested or deleted while Queued or Offered)


FINAL = frozenset({Phase.DENIED, Phase.CHECKED_IN, Phase.EXPIRED, Phase.CANCELLED})
FINAL_PHASES = frozenset(phase.value for phase in FINAL)


class Elevation(enum.StrEnum):
    NOT_REQUIRED = "NOT_REQUIRED"
    NOT_REQUESTED = "NOT_REQUESTED"
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    ELEVATED = "ELEVATED"
    DENIED = "DENIED"
    REMOVED = "REMOVED"


HOLDS_PRIVILEGE = frozenset({Elevation.APPROVED, Elevation.ELEVATED})


class CheckinReason(enum.StrEnum):
    USER = "User"
    FORCED = "Forced"
    EXPIRED = "Expired"


@dataclass(frozen=True)
class Stage:
    """One AND-ed part of an approval rule: ``count`` distinct approvers from its groups or users."""

    name: str
    groups: frozenset[str]
    users: frozenset[str]
    count: int

    def counts(self, approver: str, groups: frozenset[str]) -> bool:
        return approver in self.users or bool(groups & self.groups)


@dataclass(frozen=True)
class ApprovalRule:
    stages: tuple[Stage, ...]
    deny_count: int = 1
    pending_ttl: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class BreakGlass:
    allowed: bool = False
    min_reason: int = 20
    max_duration: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class CheckoutPolicySpec:
    project: str
    scope: str
    accounts: frozenset[str]
    max_duration: timedelta
    rotate_on_expiry: bool
    rotate_on_forced: bool
    rotate_on_user: bool
    eligible: frozenset[str]
    privileged_groups: tuple[str, ...]
    approver_users: frozenset[str]
    approver_groups: frozenset[str]
    approval_window: timedelta
    elevation_namespaces: tuple[str, ...] = ()  # kubernetes accounts: where privilegedGroups are bound
    checkout_approval: ApprovalRule | None = None  # None: a checkout needs no approval
    elevation_approval: ApprovalRule | None = None  # None: one approval from approvers (legacy rule)
    break_glass: BreakGlass = BreakGlass()
    claim_window: timedelta = timedelta(minutes=5)  # a waiting line's offer stands this long

    def covers(self, account: str) -> bool:
        """Does this account need an exclusive checkout (All / Include / Exclude)?"""
        if self.scope == "Include":
            return account in self.accounts
        if self.scope == "Exclude":
            return account not in self.accounts
        return True

    def rotates(self, reason: CheckinReason) -> bool:
        return {
            CheckinReason.EXPIRED: self.rotate_on_expiry,
            CheckinReason.FORCED: self.rotate_on_forced,
            CheckinReason.USER: self.rotate_on_user,
        }[reason]


def parse_checkout_policy(spec: Mapping[str, Any]) -> CheckoutPolicySpec:
    problems: list[str] = []

    def duration(raw: Any, default: str, path: str) -> timedelta:
        return duration_field(raw, default, path, problems)

    def approval_rule(raw: Any, path: str) -> ApprovalRule | None:
        if not raw:
            return None
        stages = tuple(
            Stage(
                str(stage.get("name") or f"stage-{i + 1}"),
                frozenset(stage.get("groups") or []),
                frozenset(stage.get("users") or []),
                int(stage.get("count") or 1),
            )
            for i, stage in enumerate(raw.get("stages") or [])
        )
        if not stages:
            problems.append(f"{path}.stages: at least one stage")
        return ApprovalRule(
            stages,
            int(raw.get("denyCount") or 1),
            duration_field(raw.get("pendingTTL"), "1h", f"{path}.pendingTTL", problems),
        )

    rotation = spec.get("rotation") or {}
    checkout = spec.get("checkout") or {}
    glass = spec.get("breakGlass") or {}
    elevation = spec.get("elevation") or {}
    approvers = elevation.get("approvers") or {}
    scope = spec.get("scope", "All")
    if scope not in ("All", "Include", "Exclude"):
        problems.append("spec.scope: one of All, Include, Exclude")
    result = CheckoutPolicySpec(
        project=str(spec.get("project", "")),
        scope=scope,
        accounts=frozenset(spec.get("accounts") or []),
        max_duration=duration(spec.get("maxDuration"), "30m", "spec.maxDuration"),
        rotate_on_expiry=bool(rotation.get("onExpiry", True)),
        rotate_on_forced=bool(rotation.get("onForcedCheckin", True)),
        rotate_on_user=bool(rotation.get("onUserCheckin", False)),
        eligible=frozenset(elevation.get("eligibleAccounts") or []),
        privileged_groups=tuple(elevation.get("privilegedGroups") or ()),
        approver_users=frozenset(approvers.get("users") or []),
        approver_groups=frozenset(approvers.get("groups") or []),
        approval_window=duration(elevation.get("approvalWindow"), "1h", "spec.elevation.approvalWindow"),
        elevation_namespaces=tuple(elevation.get("namespaces") or ()),
        checkout_approval=approval_rule(checkout.get("approval"), "spec.checkout.approval"),
        elevation_approval=approval_rule(elevation.get("approval"), "spec.elevation.approval"),
        break_glass=BreakGlass(
            bool(glass.get("allowed", False)),
            int(glass.get("minReasonLength") or 20),
            duration(glass.get("maxDuration"), "15m", "spec.breakGlass.maxDuration"),
        ),
        claim_window=duration(checkout.get("claimWindow"), "5m", "spec.checkout.claimWindow"),
    )
    if problems:
        raise SpecError(problems)
    return result


def checkout_duration(
    requested: timedelta | None, policy_max: timedelta, rule_override: timedelta | None
) -> timedelta:
    """Requested length, defaulting to and capped by the maximum (an AccessPolicy rule may override it)."""
    maximum = rule_override or policy_max
    return min(requested or maximum, maximum)


def checkin_trigger(
    *, force: bool, requested: bool, expires_at: datetime | None, now: datetime
) -> CheckinReason | None:
    """Why an Active checkout must be checked in now, if at all (force wins, then the holder, then time)."""
    if force:
        return CheckinReason.FORCED
    if requested:
        return CheckinReason.USER
    if expires_at is not None and now >= expires_at:
        return CheckinReason.EXPIRED
    return None


def elevation_on_grant(
    policy: CheckoutPolicySpec, account: str, requested: bool, requires_approval: bool
) -> Elevation:
    if account not in policy.eligible or not policy.privileged_groups:
        return Elevation.NOT_REQUIRED
    if not requested:
        return Elevation.NOT_REQUESTED
    return Elevation.PENDING if requires_approval else Elevation.APPROVED


def denial_message(
    account: str, holder: str, expires_at: datetime | None, now: datetime, *, rotating: bool = False
) -> str:
    """Why a checkout is refused while another holds the account. Once the holder's time is up the account
    stays locked until that check-in completes (a password rotation waiting on an unreachable backend, or
    a retried step): say so, rather than a time in the past with 0s left."""
    if rotating:
        return (
            f"account {account} is locked until its password rotation completes "
            f"({holder}'s checkout has ended)"
        )
    if expires_at is not None and expires_at <= now:
        return f"account {account} is locked until the check-in of {holder}'s checkout completes"
    if expires_at is None:
        return f"account {account} is checked out by {holder}"
    left = max(expires_at - now, timedelta(0))
    return (
        f"account {account} is checked out by {holder} until {expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')} "
        f"({format_duration(left)} left)"
    )


_NAME = re.compile(r"[^a-z0-9-]+")


def object_name(*parts: str) -> str:
    """A valid, collision-free object name for account-derived objects (account names may hold _)."""
    raw = "-".join(parts)
    digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
    base = _NAME.sub("-", raw.lower()).strip("-")[:50].strip("-")
    return f"{base}-{digest}"
