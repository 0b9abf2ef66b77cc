"""Plans: what reconciling an object should do, computed from its spec and what was observed.

Every reconcile first computes a :class:`Plan` (health, status fields, actions), then the handler
applies it idempotently. The same functions power `kubepam plan`, which prints the plan for a set of
manifests without touching a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubepam.domain.checkout import parse_checkout_policy
from kubepam.domain.conditions import Health, health_conditions, rfc3339, same_conditions
from kubepam.domain.connection import Phase, parse_connection
from kubepam.domain.durations import format_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.policy import parse_policy
from kubepam.domain.roles import parse_role
from kubepam.domain.validation import VALIDATORS

REFERENCE_GRACE = timedelta(seconds=60)


def settling(meta: Mapping[str, Any], now: datetime) -> bool:
    """Objects applied together (kubectl apply -f DIR, GitOps) arrive in any order: a reference to an
    object not seen yet is waited for during this grace after ``meta``'s creationTimestamp, and only
    then reported as final."""
    created = meta.get("creationTimestamp")
    if not created:
        return False
    return now - datetime.fromisoformat(str(created).replace("Z", "+00:00")) < REFERENCE_GRACE


@dataclass(frozen=True)
class Action:
    verb: str
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.verb} {self.target}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Plan:
    health: Health
    reason: str
    message: str
    status: Mapping[str, Any] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class KeysObserved:
    """What the JWKS adapter knows about one URL."""

    key_count: int
    last_refresh: datetime | None
    last_error: str


def invalid(problems: list[str]) -> Plan:
    return Plan(Health.STALLED, "InvalidSpec", "; ".join(problems))


def plan_generic(kind: str, namespace: str, name: str, spec: Mapping[str, Any]) -> Plan:
    problems = VALIDATORS[kind](namespace, name, spec)
    if problems:
        return invalid(problems)
    return Plan(Health.READY, "Accepted", f"{kind} is valid and in effect")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def agent_silent_at(status: Mapping[str, Any] | None, silent_after: timedelta) -> datetime | None:
    """When an enrolled agent becomes silent (its last heartbeat, or its enrollment, plus the limit);
    None for a Server without an agent."""
    agent = (status or {}).get("agent") or {}
    if not agent.get("keyFingerprint"):
        return None
    seen = _parse_time(agent.get("lastSeen")) or _parse_time(agent.get("enrolledAt"))
    return seen + silent_after if seen is not None else None


def plan_server(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    now: datetime,
    silent_after: timedelta,
) -> Plan:
    """A valid Server is Ready, unless its enrolled agent has been silent longer than ``silent_after``."""
    plan = plan_generic("Server", namespace, name, spec)
    if plan.health is not Health.READY:
        return plan
    silent = agent_silent_at(status, silent_after)
    if silent is not None and now >= silent:
        agent = (status or {}).get("agent") or {}
        seen = agent.get("lastSeen") or f"never (enrolled {agent.get('enrolledAt') or 'at an unknown time'})"
        return Plan(
            Health.STALLED,
            "AgentSilent",
            f"the server's agent has not reported for {format_duration(silent_after)}; last seen {seen}",
        )
    return plan


def plan_connection(
    spec: Mapping[str, Any], status: Mapping[str, Any] | None, keys: KeysObserved | None
) -> Plan:
    """``keys``: what is known of the issuer's keys (parsed inline keys, or the JWKS cache for a URL);
    None when nothing was fetched yet, or offline."""
    try:
        conn = parse_connection(spec)
    except SpecError as exc:
        return invalid(exc.problems)
    phase_set = bool((status or {}).get("phase"))
    phase = Phase.ACTIVE if (status or {}).get("phase") == Phase.ACTIVE.value else Phase.DRAFT
    fields: dict[str, Any] = {"issuer": conn.issuer, "jwksUrl": conn.jwks_url or ""}
    actions: list[Action] = []
    if not phase_set:
        fields["phase"] = Phase.DRAFT.value
        actions.append(Action("set", "status.phase", "Draft until a security admin promotes it"))
    if conn.inline_jwks is not None:
        count = keys.key_count if keys is not None else len(conn.inline_jwks.get("keys", []))
        fields.update(keyCount=count, lastRefreshError="")
        if count == 0:
            return Plan(
                Health.STALLED,
                "NoUsableKeys",
                "spec.jwks has no usable public signing key",
                fields,
                tuple(actions),
            )
    elif keys is None or (keys.last_refresh is None and not keys.last_error):
        actions.append(Action("fetch", conn.jwks_url or "", "issuer signing keys"))
        return Plan(
            Health.RECONCILING,
            "FetchingKeys",
            f"fetching issuer keys from {conn.jwks_url}",
            fields,
            tuple(actions),
        )
    else:
        fields.update(keyCount=keys.key_count, lastRefreshError=keys.last_error)
        if keys.last_refresh is not None:
            fields["lastRefreshTime"] = rfc3339(keys.last_refresh)
        if keys.key_count == 0:
            reason = "KeysUnavailable" if keys.last_error else "NoUsableKeys"
            message = keys.last_error or f"the JWKS at {conn.jwks_url} has no usable signing key"
            return Plan(Health.RECONCILING, reason, message, fields, tuple(actions))
    if phase is Phase.ACTIVE:
        message = "Active: tokens are exchanged for kubepam access tokens"
    else:
        message = "Draft: tokens are validated only; a security admin must promote it to Active"
    return Plan(Health.READY, phase.value, message, fields, tuple(actions))


def plan_role(namespace: str, name: str, spec: Mapping[str, Any]) -> Plan:
    try:
        role = parse_role(namespace, name, spec)
    except SpecError as exc:
        return invalid(exc.problems)
    conns = "any connection" if role.connections is None else ", ".join(sorted(role.connections))
    return Plan(
        Health.READY,
        "Accepted",
        f"matches tokens from Active connections ({conns}) as SSH user {role.username}",
        {"username": role.username, "blockCount": len(role.blocks)},
    )


def plan_policy(namespace: str, name: str, spec: Mapping[str, Any]) -> Plan:
    problems = VALIDATORS["AccessPolicy"](namespace, name, spec)
    try:
        policy = parse_policy(namespace, name, spec)
    except SpecError as exc:
        problems += exc.problems
    if problems:
        return invalid(problems)
    return Plan(
        Health.READY, "Accepted", f"{len(policy.rules)} rule(s) in effect", {"ruleCount": len(policy.rules)}
    )


def plan_checkout_policy(namespace: str, name: str, spec: Mapping[str, Any]) -> Plan:
    """What the index reads (parse_checkout_policy) and what validation checks, in one status: a policy
    the index leaves out is always Stalled here with the reason, never dropped in silence."""
    problems = VALIDATORS["CheckoutPolicy"](namespace, name, spec)
    try:
        parse_checkout_policy(spec)
    except SpecError as exc:
        problems += [p for p in exc.problems if p not in problems]
    if problems:
        return invalid(problems)
    return Plan(Health.READY, "Accepted", "CheckoutPolicy is valid and in effect")


def plan_request(status: Mapping[str, Any] | None) -> Plan:
    """A certificate request is decided once: Issued (Ready) or Denied (Stalled, with the reason)."""
    status = status or {}
    if status.get("phase") == "Issued":
        return Plan(Health.READY, "Issued", f"certificate valid until {status.get('validBefore')}")
    if status.get("phase") == "Denied":
        return Plan(Health.STALLED, "Denied", str(status.get("reason") or "denied"))
    return Plan(Health.RECONCILING, "Pending", "waiting for the project's CA")


def status_patch(
    plan: Plan, status: Mapping[str, Any] | None, generation: int, now: datetime
) -> dict[str, Any] | None:
    """The status to write for ``plan``, or None when the object already says exactly that."""
    current = dict(status or {})
    conditions = health_conditions(
        current.get("conditions"), plan.health, plan.reason, plan.message, generation, now
    )
    desired: dict[str, Any] = {**plan.status, "observedGeneration": generation}
    unchanged = all(current.get(k) == v for k, v in desired.items()) and same_conditions(
        current.get("conditions"), conditions
    )
    if unchanged:
        return None
    desired["conditions"] = conditions
    return desired
