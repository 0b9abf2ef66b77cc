"""Effective access: who can reach what, computed from a set of kubepam objects, and the difference
between two such sets (what a pull request would change).

A grant is computed with the operator's own decision functions (``policy.evaluate`` for certificates
and checkouts, the CheckoutPolicy's ``covers``, the Project's JIT settings, the role's
``accepts_connection``), so a plan cannot disagree with enforcement. Principals are the users, groups
and workload roles that any AccessPolicy names; servers, accounts and projects are those the objects
declare. Pure: objects in, grants out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kubepam.domain.checkout import CheckoutPolicySpec, checkout_duration, parse_checkout_policy
from kubepam.domain.durations import format_duration, parse_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.jit import parse_settings
from kubepam.domain.policy import (
    Capability,
    Policy,
    Request,
    ServerView,
    Subject,
    evaluate,
    parse_policy,
)
from kubepam.domain.project import ProjectSpec, parse_project
from kubepam.domain.roles import parse_role


@dataclass(frozen=True, order=True)
class Principal:
    kind: str  # user | group | role
    name: str

    def describe(self) -> str:
        return f"workload role {self.name}" if self.kind == "role" else f"{self.kind} {self.name}"


@dataclass(frozen=True, order=True)
class Target:
    kind: str  # ssh | x509 | checkout | jit | token
    namespace: str
    name: str  # server, account, project, or connection


@dataclass(frozen=True, order=True)
class Grant:
    principal: Principal
    target: Target
    terms: tuple[tuple[str, str], ...] = ()  # ordered (term, value) pairs, e.g. ("ttl", "3m")

    def terms_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.terms)


@dataclass(frozen=True)
class Change:
    sign: str  # + - ~
    principal: Principal
    target: Target
    before: tuple[tuple[str, str], ...] = ()
    after: tuple[tuple[str, str], ...] = ()
    widening: bool = False

    def line(self) -> str:
        what = _target_text(self.target)
        if self.sign == "~":
            old, new = dict(self.before), dict(self.after)
            parts = [
                f"{k} {old.get(k, '-')} -> {new.get(k, '-')}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
            return f"~ {self.principal.describe()} -> {what}: {'; '.join(parts)}"
        terms = self.after if self.sign == "+" else self.before
        suffix = f" ({', '.join(f'{k} {v}' for k, v in terms)})" if terms else ""
        return f"{self.sign} {self.principal.describe()} -> {what}{suffix}"


def _target_text(t: Target) -> str:
    return {
        "ssh": f"ssh {t.namespace}/{t.name}",
        "x509": f"x509 {t.namespace}/{t.name}",
        "checkout": f"checkout {t.namespace}/{t.name}",
        "jit": f"jit in project {t.namespace}/{t.name}",
        "token": f"tokens via connection {t.namespace}/{t.name}",
    }.get(t.kind, f"{t.kind} {t.namespace}/{t.name}")


@dataclass
class Objects:
    """kubepam objects by kind, as dicts (apiVersion/kind/metadata/spec[/status])."""

    items: list[Mapping[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[Mapping[str, Any]]:
        return [o for o in self.items if o.get("kind") == kind]


def _ns_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _policies(objs: Objects) -> list[Policy]:
    out = []
    for obj in objs.of("AccessPolicy"):
        ns, name = _ns_name(obj)
        try:
            out.append(parse_policy(ns, name, obj.get("spec") or {}))
        except SpecError:
            continue  # an invalid policy grants nothing (the operator refuses it too)
    return out


def _projects(objs: Objects) -> dict[tuple[str, str], ProjectSpec]:
    out = {}
    for obj in objs.of("Project"):
        try:
            out[_ns_name(obj)] = parse_project(obj.get("spec") or {})
        except SpecError:
            continue
    return out


def _checkout_policies(objs: Objects) -> dict[tuple[str, str], CheckoutPolicySpec]:
    out = {}
    for obj in objs.of("CheckoutPolicy"):
        ns, _ = _ns_name(obj)
        try:
            spec = parse_checkout_policy(obj.get("spec") or {})
        except SpecError:
            continue
        out[(ns, spec.project)] = spec
    return out


def principals(policies: Iterable[Policy]) -> set[Principal]:
    found: set[Principal] = set()
    for p in policies:
        found |= {Principal("user", u) for u in p.users}
        found |= {Principal("group", g) for g in p.groups}
        found |= {Principal("role", r) for r in p.workload_roles}
    return found


def _subject(who: Principal) -> Subject:
    if who.kind == "user":
        return Subject(who.name)
    if who.kind == "group":
        return Subject("", frozenset({who.name}))
    return Subject(f"wl_{who.name}", role=who.name)


def _d(value: timedelta | None) -> str:
    return format_duration(value) if value is not None else "-"


def grants(objs: Objects, extra_principals: Iterable[Principal] = ()) -> set[Grant]:
    """Every grant the objects make, decided by the operator's own functions."""
    policies = _policies(objs)
    projects = _projects(objs)
    checkout_policies = _checkout_policies(objs)
    who = principals(policies) | set(extra_principals)
    out: set[Grant] = set()
    servers = []
    for obj in objs.of("Server"):
        ns, name = _ns_name(obj)
        spec, meta = obj.get("spec") or {}, obj.get("metadata") or {}
        servers.append((ns, ServerView(name, str(spec.get("project", "")), dict(meta.get("labels") or {}))))
    terms: tuple[tuple[str, str], ...]
    for principal in sorted(who):
        subject = _subject(principal)
        for ns, server in servers:
            project = projects.get((ns, server.project))
            if project is None:
                continue
            for capability in (Capability.SSH, Capability.X509):
                decision = evaluate(
                    policies, subject, Request(ns, server.project, capability, server=server), project.limits
                )
                if decision.allowed:
                    logins = ",".join(p for p in decision.principals if p) or "their own username"
                    terms = (("as", logins), ("ttl", _d(decision.ttl)))
                    kind = "ssh" if capability is Capability.SSH else "x509"
                    out.add(Grant(principal, Target(kind, ns, server.name), terms))
        if principal.kind == "role":
            continue  # workload roles get certificates, not shared accounts
        for (ns, project_name), project in sorted(projects.items()):
            checkout_policy = checkout_policies.get((ns, project_name))
            for account in project.shared_accounts:
                account_name = str(account.get("name", ""))
                decision = evaluate(
                    policies,
                    subject,
                    Request(ns, project_name, Capability.CHECKOUT, account=account_name),
                )
                if not decision.allowed:
                    continue
                if checkout_policy is not None and checkout_policy.covers(account_name):
                    # the longest checkout the operator grants: the rule's override, else the policy's maximum
                    limit = checkout_duration(None, checkout_policy.max_duration, decision.checkout_duration)
                    rule = decision.grant
                    elevation = "no"
                    if rule is not None and rule.elevation_allowed and checkout_policy.privileged_groups:
                        elevation = "needs approval" if rule.elevation_requires_approval else "yes"
                    terms = (("max", _d(limit)), ("elevation", elevation))
                else:
                    terms = (("max", "no checkout needed"),)
                out.add(Grant(principal, Target("checkout", ns, f"{project_name}/{account_name}"), terms))
            try:
                jit = parse_settings(project.jit, ns)
            except SpecError:
                continue
            if jit.enabled and principal.kind == "group" and principal.name in jit.creator_groups:
                terms = (("groups", ",".join(jit.allowed_groups)), ("max", _d(jit.max_duration)))
                out.add(Grant(principal, Target("jit", ns, project_name), terms))
    out |= _tokens(objs)
    return out


def _tokens(objs: Objects) -> set[Grant]:
    """Active workload connections and the roles that accept them: which role a CI job can become."""
    out: set[Grant] = set()
    active = [
        _ns_name(c)
        for c in objs.of("WorkloadConnection")
        if ((c.get("status") or {}).get("phase") or "Draft") == "Active"
    ]
    for obj in objs.of("WorkloadRole"):
        ns, name = _ns_name(obj)
        try:
            role = parse_role(ns, name, obj.get("spec") or {})
        except SpecError:
            continue
        for conn_ns, conn_name in active:
            if role.accepts_connection(conn_ns, conn_name):
                out.add(Grant(Principal("role", name), Target("token", conn_ns, conn_name)))
    return out


_WIDER_IS_LARGER = ("max", "ttl")


def _widens(before: Mapping[str, str], after: Mapping[str, str]) -> bool:
    for key in set(before) | set(after):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key == "elevation":
            rank = {"no": 0, "needs approval": 1, "yes": 2}
            if rank.get(new or "no", 2) > rank.get(old or "no", 2):
                return True
        elif key in ("as", "groups"):
            if set((new or "").split(",")) - set((old or "").split(",")):
                return True
        elif key in _WIDER_IS_LARGER and _seconds(new) > _seconds(old):
            return True
    return False


def _seconds(value: str | None) -> float:
    if not value or value == "-":
        return 0.0
    if value == "no checkout needed":
        return float("inf")
    try:
        return parse_duration(value).total_seconds()
    except ValueError:
        return 0.0


def diff(before: Iterable[Grant], after: Iterable[Grant]) -> list[Change]:
    """What changes between two grant sets; widening changes first, then by principal and target."""
    old = {(g.principal, g.target): g for g in before}
    new = {(g.principal, g.target): g for g in after}
    changes: list[Change] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None and b is not None:
            changes.append(Change("+", key[0], key[1], after=b.terms, widening=True))
        elif b is None and a is not None:
            changes.append(Change("-", key[0], key[1], before=a.terms))
        elif a is not None and b is not None and a.terms != b.terms:
            wider = _widens(dict(a.terms), dict(b.terms))
            changes.append(Change("~", key[0], key[1], a.terms, b.terms, wider))
    return sorted(changes, key=lambda c: (not c.widening, c.principal, c.target))


def access_diff(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> list[Change]:
    """The access diff between two sets of objects, over the principals either names."""
    b, a = Objects(list(before)), Objects(list(after))
    who = principals(_policies(b)) | principals(_policies(a))
    return diff(grants(b, who), grants(a, who))
