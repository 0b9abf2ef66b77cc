"""A server's desired local accounts, as its agent applies them (docs/agent-protocol.md, section 4).

Every AccessPolicy rule that covers the server for SSH (the policy's namespace is the server's, the
rule lists its project, its ``servers`` selector matches the server's labels, ``sshCertificate`` is
enabled) gives local accounts to the principals the policy names:

- a rule's ``principals`` are the login names of the policy's users and groups;
- without them, users log in as themselves;
- workload roles always log in as ``wl_<role>``;
- groups cannot be listed (Kubernetes has no user directory), so a group's member gets an account
  while they hold a valid SSH certificate issued by an SSHCertificateRequest for this server (and a
  rule of a policy naming them still allows that login).

``sudo`` is true when any rule granting the account says ``sshCertificate.sudo: true``. Names that are
not POSIX user names are skipped with a reason. Pure: objects in, accounts out; ``now`` is passed in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubepam.domain.errors import SpecError
from kubepam.domain.policy import WILDCARD, Policy, Rule
from kubepam.domain.roles import workload_username
from kubepam.domain.selectors import selector_matches

POSIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class ServerFacts:
    namespace: str
    name: str
    project: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedLogin:
    """An SSHCertificateRequest for this server in phase Issued: who asked (as the API server stamped
    it), the principals its certificate carries and when it stops being valid."""

    requester: str
    groups: frozenset[str]
    principals: tuple[str, ...]
    valid_before: datetime


@dataclass(frozen=True)
class Account:
    name: str
    principals: tuple[str, ...]
    sudo: bool
    sources: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "principals": list(self.principals),
            "sudo": self.sudo,
            "sources": list(self.sources),
        }


@dataclass(frozen=True)
class DesiredAccess:
    accounts: tuple[Account, ...]
    skipped: tuple[tuple[str, str], ...]  # (name, reason), sorted

    def to_dict(self) -> dict[str, Any]:
        return {
            "accounts": [a.to_dict() for a in self.accounts],
            "skipped": [{"name": name, "reason": reason} for name, reason in self.skipped],
        }


def covers(rule: Rule, server: ServerFacts) -> bool:
    """Whether the rule grants SSH to this server (project, selector, SSH enabled)."""
    if not (WILDCARD in rule.projects or server.project in rule.projects):
        return False
    if rule.servers is None or not rule.ssh.enabled:
        return False
    return selector_matches(rule.servers, server.labels)


class _Builder:
    def __init__(self) -> None:
        self.sudo: dict[str, bool] = {}
        self.sources: dict[str, set[str]] = {}
        self.skipped: dict[str, str] = {}

    def add(self, name: str, sudo: bool, source: str) -> None:
        if not POSIX_USER.match(name):
            self.skipped.setdefault(
                name, "not a POSIX user name (lower case letters, digits, _ and -, at most 32)"
            )
            return
        self.sudo[name] = self.sudo.get(name, False) or sudo
        self.sources.setdefault(name, set()).add(source)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.setdefault(name, reason)

    def build(self) -> DesiredAccess:
        accounts = tuple(
            Account(name, (name,), self.sudo[name], tuple(sorted(self.sources[name])))
            for name in sorted(self.sudo)
        )
        skipped = tuple(sorted((n, r) for n, r in self.skipped.items() if n not in self.sudo))
        return DesiredAccess(accounts, skipped)


def _login_allowed(rule: Rule, login: IssuedLogin, principal: str) -> bool:
    return principal in rule.principals if rule.principals else principal == login.requester


def desired_access(
    server: ServerFacts, policies: Iterable[Policy], logins: Iterable[IssuedLogin], now: datetime
) -> DesiredAccess:
    """The server's local accounts, sorted by name (see the module's docstring for the rules)."""
    out = _Builder()
    relevant: list[tuple[Policy, Rule, str]] = [
        (policy, rule, f"{policy.namespace}/{policy.name}/{rule.name}")
        for policy in sorted(policies, key=lambda p: p.name)
        if policy.namespace == server.namespace
        for rule in policy.rules
        if covers(rule, server)
    ]
    for policy, rule, source in relevant:
        sudo = rule.ssh.sudo
        if policy.users or policy.groups:
            if rule.principals:
                for principal in rule.principals:
                    out.add(principal, sudo, source)
            else:
                for user in sorted(policy.users):
                    out.add(user, sudo, source)
        for role in sorted(policy.workload_roles):
            try:
                out.add(workload_username(role), sudo, source)
            except SpecError:
                out.skip(f"wl_{role}", "the workload role's name gives no valid Linux user name")
    for login in logins:
        if login.valid_before <= now:
            continue
        for policy, rule, source in relevant:
            named = login.requester in policy.users or bool(login.groups & policy.groups)
            if not named:
                continue
            for principal in login.principals:
                if _login_allowed(rule, login, principal):
                    out.add(principal, rule.ssh.sudo, source)
    return out.build()


def access_document(
    server: ServerFacts, trusted_user_ca_keys: str, desired: DesiredAccess
) -> tuple[dict[str, Any], str]:
    """The answer's body (without ``generatedAt``) and its ETag: the SHA-256 of its canonical JSON."""
    body = {
        "server": f"{server.namespace}/{server.name}",
        "project": server.project,
        "trustedUserCAKeys": trusted_user_ca_keys,
        **desired.to_dict(),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return body, hashlib.sha256(canonical.encode()).hexdigest()


def next_expiry(logins: Sequence[IssuedLogin], now: datetime) -> datetime | None:
    """When the earliest still-valid certificate stops counting (the accounts may change then)."""
    future = [login.valid_before for login in logins if login.valid_before > now]
    return min(future) if future else None
