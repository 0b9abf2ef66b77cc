"""AccessPolicy evaluation: who may get what, as a chain of checks that each give a reason.

A request names a subject (a person with groups, or a workload role), a namespace, a project, maybe a
server (with its labels), a capability (ssh, x509, checkout), and what it asks for (principals, TTL,
account). Policies of the namespace are tried in name order and their rules in order; the first rule
whose every check passes decides. A denial carries the reason of the check that failed furthest into
the most promising rule, so people see "server db-1 is not selected by role=web", not "denied".
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kubepam.domain.durations import format_duration, parse_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.selectors import describe_selector, selector_matches, validate_selector

WILDCARD = "*"


class Capability(enum.StrEnum):
    SSH = "ssh"
    X509 = "x509"
    CHECKOUT = "checkout"


@dataclass(frozen=True)
class Subject:
    """A person (username + groups from the API server) or a workload role (``role`` set)."""

    username: str
    groups: frozenset[str] = frozenset()
    role: str | None = None

    @property
    def is_workload(self) -> bool:
        return self.role is not None

    def describe(self) -> str:
        return f"workload role {self.role}" if self.role else f"user {self.username}"


@dataclass(frozen=True)
class ServerView:
    name: str
    project: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    namespace: str
    project: str
    capability: Capability
    server: ServerView | None = None
    principals: tuple[str, ...] = ()
    ttl: timedelta | None = None
    account: str | None = None


@dataclass(frozen=True)
class CertTerms:
    enabled: bool = True
    ttl: timedelta | None = None
    sudo: bool = False  # SSH only: the local account the agent creates gets passwordless sudo


@dataclass(frozen=True)
class Rule:
    name: str
    projects: frozenset[str]
    servers: Mapping[str, Any] | None  # None grants no server; {} grants all (as Teleport and NetworkPolicy)
    principals: tuple[str, ...]
    accounts: frozenset[str]
    ssh: CertTerms
    x509: CertTerms
    checkout_duration: timedelta | None
    elevation_allowed: bool
    elevation_requires_approval: bool
    approver_users: frozenset[str]
    approver_groups: frozenset[str]


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    users: frozenset[str]
    groups: frozenset[str]
    workload_roles: frozenset[str]
    rules: tuple[Rule, ...]

    def names(self, subject: Subject) -> bool:
        if subject.role is not None:
            return subject.role in self.workload_roles
        return subject.username in self.users or bool(subject.groups & self.groups)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    policy: str | None = None
    rule: str | None = None
    principals: tuple[str, ...] = ()
    ttl: timedelta | None = None
    checkout_duration: timedelta | None = None
    checks: tuple[Check, ...] = ()
    grant: Rule | None = None

    @property
    def source(self) -> str:
        return f"{self.policy}/{self.rule}" if self.policy else ""


@dataclass(frozen=True)
class Limits:
    """What the project allows: default and maximum certificate TTL."""

    default_ttl: timedelta = timedelta(minutes=3)
    max_ttl: timedelta = timedelta(hours=1)


def _opt_duration(raw: Any, path: str, problems: list[str]) -> timedelta | None:
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None


def parse_policy(namespace: str, name: str, spec: Mapping[str, Any]) -> Policy:
    problems: list[str] = []
    principals = spec.get("principals") or {}
    rules: list[Rule] = []
    for i, raw in enumerate(spec.get("rules") or []):
        at = f"spec.rules[{i}]"
        problems += validate_selector(raw.get("servers"), f"{at}.servers")
        ssh, x509 = raw.get("sshCertificate") or {}, raw.get("x509Certificate") or {}
        elevation = raw.get("elevation") or {}
        approvers = elevation.get("approvers") or {}
        rules.append(
            Rule(
                name=str(raw.get("name") or f"rule-{i}"),
                projects=frozenset(raw.get("projects") or []),
                servers=raw.get("servers"),  # None: no servers; {}: every server of the projects
                principals=tuple(raw.get("principals") or ()),
                accounts=frozenset(raw.get("accounts") or []),
                ssh=CertTerms(
                    bool(ssh.get("enabled", True)),
                    _opt_duration(ssh.get("ttl"), f"{at}.sshCertificate.ttl", problems),
                    bool(ssh.get("sudo", False)),
                ),
                x509=CertTerms(
                    bool(x509.get("enabled", True)),
                    _opt_duration(x509.get("ttl"), f"{at}.x509Certificate.ttl", problems),
                ),
                checkout_duration=_opt_duration(
                    raw.get("checkoutDuration"), f"{at}.checkoutDuration", problems
                ),
                elevation_allowed=bool(elevation.get("allowed", False)),
                elevation_requires_approval=bool(elevation.get("requiresApproval", True)),
                approver_users=frozenset(approvers.get("users") or []),
                approver_groups=frozenset(approvers.get("groups") or []),
            )
        )
    if problems:
        raise SpecError(problems)
    return Policy(
        namespace,
        name,
        frozenset(principals.get("users") or []),
        frozenset(principals.get("groups") or []),
        frozenset(principals.get("workloadRoles") or []),
        tuple(rules),
    )


_PASSED = {
    name: Check(name, True, "ok")
    for name in ("project", "servers", "server-project", "server", "account", "capability", "principals")
}


def _rule_checks(
    rule: Rule, subject: Subject, req: Request, limits: Limits
) -> tuple[list[Check], Decision | None]:
    """Run one rule's chain; returns the checks made and, if all passed, the grant. Reasons are only
    written for the check that fails (this runs for every request)."""
    checks: list[Check] = []

    def fail(name: str, reason: str) -> tuple[list[Check], None]:
        checks.append(Check(name, False, reason))
        return checks, None

    if not (WILDCARD in rule.projects or req.project in rule.projects):
        return fail("project", f"project {req.project} is not listed")
    checks.append(_PASSED["project"])
    if req.capability is Capability.CHECKOUT:
        if not (WILDCARD in rule.accounts or (req.account is not None and req.account in rule.accounts)):
            return fail("account", f"account {req.account} is not listed")
        checks.append(_PASSED["account"])
        return checks, Decision(
            True,
            f"allowed by rule {rule.name}",
            rule=rule.name,
            checks=tuple(checks),
            checkout_duration=rule.checkout_duration,
            grant=rule,
        )

    if rule.servers is None:
        return fail("servers", "the rule grants no servers (servers: {} would grant all of the project's)")
    checks.append(_PASSED["servers"])
    if req.server is not None:
        if req.server.project != req.project:
            return fail(
                "server-project",
                f"server {req.server.name} belongs to project {req.server.project}, not {req.project}",
            )
        checks.append(_PASSED["server-project"])
        if not selector_matches(rule.servers, req.server.labels):
            return fail(
                "server", f"server {req.server.name} is not selected by {describe_selector(rule.servers)}"
            )
    elif rule.servers:
        return fail(
            "server",
            f"the rule only covers servers selected by {describe_selector(rule.servers)}; name the server",
        )
    checks.append(_PASSED["server"])

    terms = rule.ssh if req.capability is Capability.SSH else rule.x509
    if not terms.enabled:
        return fail("capability", f"{req.capability.value} certificates are disabled by the rule")
    checks.append(_PASSED["capability"])
    if subject.is_workload:
        allowed_principals: tuple[str, ...] = (subject.username,)  # always its own wl_<role>
    else:
        allowed_principals = rule.principals or (subject.username,)
    asked = req.principals or allowed_principals
    extra = [p for p in asked if p not in allowed_principals]
    if extra:
        return fail(
            "principals",
            f"principals {', '.join(extra)} are not allowed (allowed: {', '.join(allowed_principals)})",
        )
    checks.append(_PASSED["principals"])
    ttl = req.ttl or terms.ttl or limits.default_ttl
    capped = min(ttl, limits.max_ttl)
    if capped < ttl:
        checks.append(
            Check(
                "ttl",
                True,
                f"capped from {format_duration(ttl)} to {format_duration(capped)} by the project maximum",
            )
        )
    return checks, Decision(
        True,
        f"allowed by rule {rule.name}",
        rule=rule.name,
        principals=tuple(asked),
        ttl=capped,
        checks=tuple(checks),
        grant=rule,
    )


def evaluate(
    policies: Sequence[Policy], subject: Subject, req: Request, limits: Limits = Limits()
) -> Decision:
    relevant = sorted((p for p in policies if p.namespace == req.namespace), key=lambda p: p.name)
    naming = [p for p in relevant if p.names(subject)]
    if not naming:
        who = subject.describe() + (
            ""
            if subject.is_workload or not subject.groups
            else f" (groups {', '.join(sorted(subject.groups))})"
        )
        return Decision(False, f"no AccessPolicy in namespace {req.namespace} names {who}")
    if not any(p.rules for p in naming):
        return Decision(False, "the AccessPolicies naming you have no rules")
    best: tuple[int, str, tuple[Check, ...]] | None = None
    for policy in naming:
        for rule in policy.rules:
            checks, granted = _rule_checks(rule, subject, req, limits)
            if granted is not None:
                return Decision(
                    True,
                    f"allowed by {policy.name}/{rule.name}",
                    policy.name,
                    rule.name,
                    granted.principals,
                    granted.ttl,
                    granted.checkout_duration,
                    tuple(checks),
                    granted.grant,
                )
            failed = checks[-1]
            if best is None or len(checks) > best[0]:
                best = (len(checks), f"{policy.name}/{rule.name}: {failed.reason}", tuple(checks))
    assert best is not None
    return Decision(False, f"denied: closest rule {best[1]}", checks=best[2])
