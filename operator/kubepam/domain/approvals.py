"""Approval requests: what a checkout, an elevation or an extension waits for, and how the votes count.

A request has stages that must all be met (AND), each by ``count`` distinct approvers from its groups
or users. People vote by appending to ``status.approvals`` (the API server stamps who and their groups,
refuses the requester, a second vote by the same person and a vote when nothing is pending); this
module only counts. The requester never counts; a person counts once, for one stage, even if they are
in several groups: votes are assigned to stages by a maximum bipartite matching, so a person in both
groups never blocks a stage someone else could have filled. ``denyCount`` denials from people a stage
counts end the request; a request not approved within ``pendingTTL`` expires. Break-glass is the
requester's own approval with a reason long enough, when the policy allows it. Pure: time passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubepam.domain.checkout import ApprovalRule, BreakGlass, CheckoutPolicySpec, Stage
from kubepam.domain.durations import format_duration


class Target(enum.StrEnum):
    CHECKOUT = "Checkout"
    ELEVATION = "Elevation"
    EXTENSION = "Extension"


class State(enum.StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    DENIED = "Denied"
    EXPIRED = "Expired"


@dataclass(frozen=True)
class Vote:
    request: str
    approver: str
    groups: frozenset[str]
    decision: str  # Approved | Denied
    comment: str = ""


def votes_of(raw: Any) -> list[Vote]:
    """status.approvals as votes (entries the API server did not stamp are skipped)."""
    out: list[Vote] = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, Mapping) or not entry.get("approver") or not entry.get("request"):
            continue
        out.append(
            Vote(
                str(entry["request"]),
                str(entry["approver"]),
                frozenset(str(g) for g in entry.get("groups") or []),
                str(entry.get("decision") or ""),
                str(entry.get("comment") or ""),
            )
        )
    return out


def elevation_rule(
    policy: CheckoutPolicySpec, rule_users: frozenset[str], rule_groups: frozenset[str]
) -> ApprovalRule:
    """The policy's elevation stages, or the single-approver rule of earlier versions: one approval from
    the CheckoutPolicy's approvers plus the AccessPolicy rule's (anyone in kubepam:approvers if none)."""
    if policy.elevation_approval is not None:
        return policy.elevation_approval
    users = policy.approver_users | rule_users
    groups = policy.approver_groups | rule_groups
    if not users and not groups:
        groups = frozenset({"kubepam:approvers"})
    return ApprovalRule((Stage("approvers", groups, users, 1),))


@dataclass(frozen=True)
class StageTally:
    name: str
    count: int
    approved_by: tuple[str, ...]

    @property
    def met(self) -> bool:
        return len(self.approved_by) >= self.count

    def describe(self) -> str:
        return f"{self.name} {len(self.approved_by)}/{self.count}"


@dataclass(frozen=True)
class Tally:
    state: State
    stages: tuple[StageTally, ...]
    denied_by: tuple[str, ...]
    ignored: tuple[str, ...]  # why some votes did not count
    message: str

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "stages": [
                {"name": s.name, "count": s.count, "approvedBy": list(s.approved_by)} for s in self.stages
            ],
            "deniedBy": list(self.denied_by),
            "message": self.message,
        }


def _assign(stages: Sequence[Stage], approvers: Sequence[tuple[str, frozenset[str]]]) -> list[list[str]]:
    """Maximum matching of approvers to stage slots (Kuhn's augmenting paths; a handful of people)."""
    slots = [i for i, stage in enumerate(stages) for _ in range(stage.count)]
    taken: list[int | None] = [None] * len(slots)  # slot -> approver index

    def place(person: int, seen: set[int]) -> bool:
        name, groups = approvers[person]
        for slot, stage_index in enumerate(slots):
            if slot in seen or not stages[stage_index].counts(name, groups):
                continue
            seen.add(slot)
            other = taken[slot]
            if other is None or place(other, seen):
                taken[slot] = person
                return True
        return False

    for person in range(len(approvers)):
        place(person, set())
    chosen: list[list[int]] = [[] for _ in stages]
    for slot, placed in enumerate(taken):
        if placed is not None:
            chosen[slots[slot]].append(placed)
    return [[approvers[p][0] for p in sorted(people)] for people in chosen]  # in the order they voted


def tally(
    rule: ApprovalRule,
    votes: Sequence[Vote],
    *,
    request: str,
    requester: str,
    requested_at: datetime,
    now: datetime,
) -> Tally:
    """Where one request stands given every vote so far (only its own votes count, first vote per person)."""
    ignored: list[str] = []
    approving: list[tuple[str, frozenset[str]]] = []
    denying: list[str] = []
    seen: set[str] = set()
    for vote in votes:
        if vote.request != request:
            continue
        if vote.approver == requester:
            ignored.append(f"{vote.approver} is the requester")
            continue
        if vote.approver in seen:
            ignored.append(f"{vote.approver} already decided")
            continue
        seen.add(vote.approver)
        if not any(stage.counts(vote.approver, vote.groups) for stage in rule.stages):
            ignored.append(f"{vote.approver} is not an approver for any stage")
            continue
        if vote.decision == "Approved":
            approving.append((vote.approver, vote.groups))
        elif vote.decision == "Denied":
            denying.append(vote.approver)
    assigned = _assign(rule.stages, approving)
    stages = tuple(
        StageTally(stage.name, stage.count, tuple(names))
        for stage, names in zip(rule.stages, assigned, strict=True)
    )
    progress = ", ".join(s.describe() for s in stages)
    if len(denying) >= rule.deny_count:
        return Tally(State.DENIED, stages, tuple(denying), tuple(ignored), f"denied by {', '.join(denying)}")
    if all(s.met for s in stages):
        names = [n for s in stages for n in s.approved_by]
        return Tally(
            State.APPROVED, stages, tuple(denying), tuple(ignored), f"approved by {', '.join(names)}"
        )
    if now >= requested_at + rule.pending_ttl:
        return Tally(
            State.EXPIRED,
            stages,
            tuple(denying),
            tuple(ignored),
            f"not approved within {format_duration(rule.pending_ttl)} (pendingTTL; {progress})",
        )
    note = f"waiting for approval: {progress}"
    if ignored:
        note += f" (not counted: {'; '.join(ignored)})"
    return Tally(State.PENDING, stages, tuple(denying), tuple(ignored), note)


def break_glass_problem(glass: BreakGlass, reason: str | None, policy_name: str) -> str:
    """Why a break-glass self-approval is not accepted ('' when it is)."""
    if not glass.allowed:
        return f"break-glass is not allowed by the CheckoutPolicy of project {policy_name}"
    text = (reason or "").strip()
    if len(text) < glass.min_reason:
        return (
            f"a break-glass reason needs at least {glass.min_reason} characters (got {len(text)}): "
            "say what is broken and why it cannot wait"
        )
    return ""


def capped(window: timedelta, glass: BreakGlass, used: bool) -> timedelta:
    """A break-glass window never exceeds the policy's break-glass maximum."""
    return min(window, glass.max_duration) if used else window


def request_id(target: Target, round_: int) -> str:
    return f"{target.value.lower()}-{round_}"


def rule_for(
    target: str,
    policy: CheckoutPolicySpec,
    rule_users: frozenset[str] = frozenset(),
    rule_groups: frozenset[str] = frozenset(),
) -> ApprovalRule | None:
    """The stages a request of this target is counted against (None: this policy asks no approval)."""
    if target == Target.ELEVATION.value:
        return elevation_rule(policy, rule_users, rule_groups)
    return policy.checkout_approval


def would_count(
    rule: ApprovalRule,
    *,
    request: str,
    approver: str,
    groups: frozenset[str],
    requester: str,
    votes: Sequence[Vote],
) -> tuple[bool, str]:
    """Would this person's vote on the open request count (the console offers buttons from this)?"""
    if approver == requester:
        return False, "you cannot decide your own request"
    if any(v.request == request and v.approver == approver for v in votes):
        return False, "you already voted on this request"
    stages = [s.name for s in rule.stages if s.counts(approver, groups)]
    if not stages:
        return False, f"{approver} is not an approver for any stage"
    return True, f"your vote counts for {', '.join(stages)}"
