"""What a request would get, before it is made: the console's dry-run verdict for a checkout (allowed,
for how long, whether elevation needs approval, or who holds the account until when) and for a JIT
account. Computed by the operator's own rules (`evaluate`, `checkout_duration`, `elevation_on_grant`,
`denial_message`, `jit.check`), so the verdict and the operator's decision cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubepam.domain import jit
from kubepam.domain.checkout import (
    CheckoutPolicySpec,
    Elevation,
    Phase,
    checkout_duration,
    denial_message,
    elevation_on_grant,
    parse_checkout_policy,
)
from kubepam.domain.durations import format_duration, parse_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.policy import Capability, Policy, Request, Subject, evaluate, parse_policy
from kubepam.domain.project import parse_project

HOLDING = frozenset({Phase.ACTIVE.value, Phase.CHECKIN.value, Phase.OFFERED.value})  # an offer holds it too


@dataclass(frozen=True)
class Verdict:
    """allowed: the operator would grant it now. notes: what else a person should know first."""

    allowed: bool
    message: str
    duration: str = ""
    needs_approval: bool = False
    held_by: str = ""
    held_until: str = ""
    maximum: str = ""  # the longest checkout this person may hold (an extension goes up to it)
    notes: tuple[str, ...] = field(default_factory=tuple)


def _ts(raw: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None


def access_policies(objects: Sequence[Mapping[str, Any]]) -> list[Policy]:
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        try:
            out.append(parse_policy(str(meta.get("namespace")), str(meta.get("name")), obj.get("spec") or {}))
        except SpecError:
            continue  # an invalid policy grants nothing (the operator refuses it too)
    return out


def covering_policy(
    checkout_policies: Sequence[Mapping[str, Any]], project: str, account: str
) -> CheckoutPolicySpec | None:
    """The CheckoutPolicy of a project that covers an account (an invalid one covers nothing)."""
    found = None
    for obj in checkout_policies:
        try:
            candidate = parse_checkout_policy(obj.get("spec") or {})
        except SpecError:
            continue
        if candidate.project == project and candidate.covers(account):
            found = candidate
    return found


def holder_of(
    checkouts: Sequence[Mapping[str, Any]], namespace: str, project: str, account: str
) -> Mapping[str, Any] | None:
    """The checkout holding an account now (Active, still checking in, or offered from the line), if any."""
    for obj in checkouts:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if (
            (obj.get("metadata") or {}).get("namespace") == namespace
            and spec.get("project") == project
            and spec.get("account") == account
            and status.get("phase") in HOLDING
        ):
            return obj
    return None


def checkout_verdict(
    *,
    namespace: str,
    project: Mapping[str, Any] | None,
    checkout_policies: Sequence[Mapping[str, Any]],
    access: Sequence[Mapping[str, Any]],
    checkouts: Sequence[Mapping[str, Any]],
    username: str,
    groups: frozenset[str],
    account: str,
    duration: str,
    elevate: bool,
    now: datetime,
) -> Verdict:
    """The operator's `_start` decision for a Checkout, judged from objects the person can read."""
    if project is None:
        return Verdict(False, f"no Project in namespace {namespace}")
    name = str((project.get("metadata") or {}).get("name"))
    try:
        spec = parse_project(project.get("spec") or {})
    except SpecError as exc:
        return Verdict(False, f"project {name} is invalid: {exc}")
    if account not in {str(a.get("name")) for a in spec.shared_accounts}:
        return Verdict(False, f"project {name} has no shared account {account}")
    policy = covering_policy(checkout_policies, name, account)
    if policy is None:
        return Verdict(False, f"no CheckoutPolicy of project {name} covers account {account}")
    decision = evaluate(
        access_policies(access),
        Subject(username, groups),
        Request(namespace, name, Capability.CHECKOUT, account=account),
    )
    if not decision.allowed:
        return Verdict(False, decision.reason)
    try:
        requested = parse_duration(duration) if duration else None
    except ValueError as exc:
        return Verdict(False, f"duration: {exc}")
    length = checkout_duration(requested, policy.max_duration, decision.checkout_duration)
    maximum = format_duration(checkout_duration(None, policy.max_duration, decision.checkout_duration))
    notes: list[str] = []
    if requested is not None and requested > length:
        notes.append(
            f"{format_duration(requested)} is over the maximum: you would get {format_duration(length)}"
        )
    rule = decision.grant
    needs_approval = False
    if elevate:
        state = elevation_on_grant(policy, account, True, rule.elevation_requires_approval if rule else True)
        if state is Elevation.NOT_REQUIRED:
            notes.append(f"account {account} is not eligible for elevation")
        elif rule is not None and not rule.elevation_allowed:
            notes.append(f"rule {decision.source} does not allow elevation")
        else:
            needs_approval = state is Elevation.PENDING
            notes.append(
                "elevation needs an approver's decision" if needs_approval else "elevation is granted at once"
            )
    held = holder_of(checkouts, namespace, name, account)
    if held is not None:
        status, spec_ = held.get("status") or {}, held.get("spec") or {}
        holder = str(status.get("holder") or spec_.get("requester") or "someone")
        until = _ts(status.get("expiresAt"))
        rotating = status.get("phase") == Phase.CHECKIN.value
        return Verdict(
            False,
            denial_message(account, holder, until, now, rotating=rotating),
            held_by=holder,
            held_until=str(status.get("expiresAt") or ""),
            maximum=maximum,
        )
    return Verdict(
        True,
        f"allowed by {decision.source} for {format_duration(length)}",
        duration=format_duration(length),
        needs_approval=needs_approval,
        maximum=maximum,
        notes=tuple(notes),
    )


def jit_verdict(
    *,
    namespace: str,
    project: Mapping[str, Any] | None,
    spec: Mapping[str, Any],
    username: str,
    groups: frozenset[str],
    existing: Mapping[str, Any] | None,
) -> Verdict:
    """The operator's `jit.check` for a JitAccount (create, or re-enable when `existing` is given)."""
    if project is None:
        return Verdict(False, f"no Project in namespace {namespace}")
    name = str((project.get("metadata") or {}).get("name"))
    try:
        settings = jit.parse_settings((project.get("spec") or {}).get("jit") or {}, namespace)
    except SpecError as exc:
        return Verdict(False, f"project {name}: {exc}")
    try:
        request = jit.check(spec, settings, name, username, groups)
    except SpecError as exc:
        return Verdict(False, str(exc))
    status = (existing or {}).get("status") or {}
    if jit.same_reason_again(status.get("history") or [], request.reason, status.get("phase")):
        return Verdict(False, "re-enabling takes a new reason (the last window had the same one)")
    verb = "re-enabled" if existing is not None else "enabled"
    return Verdict(
        True,
        f"{request.account} would be {verb} for {format_duration(request.duration)} "
        f"with {', '.join(request.groups)}",
        duration=format_duration(request.duration),
    )
