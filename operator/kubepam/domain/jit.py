"""Just-in-time accounts (Quickpass-style): a personal privileged account named <name>_jit, enabled for
one window with a mandatory reason, disabled at the window's end; a new reason re-enables it.

Pure rules: the project's JIT settings, who may create an account for whom, which groups and how
long, the account's names in each backend, and what a spec change means (re-enable or nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubepam.domain.durations import format_duration, parse_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.grants import privileged_namespaces_problem

NAME_MAX = 20
HISTORY_MAX = 20
ADMIN_GROUPS = frozenset({"kubepam:security-admins", "system:masters"})
_ACCOUNT = re.compile(r"^[a-z][a-z0-9_]*_jit$")


@dataclass(frozen=True)
class JitSettings:
    enabled: bool
    backend: str  # kubernetes | postgresql
    allowed_groups: tuple[str, ...]
    creator_groups: frozenset[str]
    max_duration: timedelta
    namespaces: tuple[str, ...]  # kubernetes: where bindings go (never the project's own namespace)
    postgresql: Mapping[str, Any] | None


def parse_settings(jit: Mapping[str, Any], project_namespace: str) -> JitSettings:
    try:
        maximum = parse_duration(jit.get("maxDuration", "8h"))
    except ValueError as exc:
        raise SpecError([f"spec.jit.maxDuration: {exc}"]) from None
    backend = str(jit.get("backend", "kubernetes"))
    namespaces = tuple(jit.get("namespaces") or ())
    if backend == "kubernetes" and jit.get("enabled", False):
        problem = privileged_namespaces_problem("spec.jit.namespaces", namespaces, project_namespace)
        if problem:
            raise SpecError([problem])
    return JitSettings(
        enabled=bool(jit.get("enabled", False)),
        backend=backend,
        allowed_groups=tuple(jit.get("allowedGroups") or ()),
        creator_groups=frozenset((jit.get("creators") or {}).get("groups") or []),
        max_duration=maximum,
        namespaces=namespaces,
        postgresql=jit.get("postgresql"),
    )


SETTINGS_LABEL = "kubepam.io/jit-settings"  # the admission policy's paramRef selects on it


def settings_configmap_name(project: str) -> str:
    return f"{project}-jit"


def admission_params(project: str, jit: Mapping[str, Any]) -> dict[str, str]:
    """The data of the project's ``<project>-jit`` ConfigMap: the parameter of the admission policy
    kubepam-jitaccount-rules. The operator publishes it and ``kubepam validate`` derives it offline from
    the same function, so both judge a JitAccount against the same settings."""
    creators = (jit.get("creators") or {}).get("groups") or []
    return {
        "project": project,
        "enabled": str(bool(jit.get("enabled", False))).lower(),
        "allowedGroups": ",".join(jit.get("allowedGroups") or []),
        "creators": ",".join(creators),
        "maxDuration": str(jit.get("maxDuration", "8h")),
    }


def grant_record(
    settings: JitSettings, groups: Sequence[str], previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What the account may hold once this window is granted, recorded in status.grant before the
    operator grants it, so that it can be taken away even after the Project's JIT settings change or
    the Project is gone: this window's groups and namespaces, plus an earlier window's record in the same
    backend (a binding in a namespace the project no longer lists is still there to remove)."""
    namespaces, held = list(settings.namespaces), list(groups)
    if previous and previous.get("backend") == settings.backend:
        namespaces += [str(n) for n in previous.get("namespaces") or ()]
        held += [str(g) for g in previous.get("groups") or ()]
    return {
        "backend": settings.backend,
        "namespaces": list(dict.fromkeys(namespaces)),
        "groups": list(dict.fromkeys(held)),
    }


def removal_settings(current: JitSettings | None, grant: Mapping[str, Any] | None) -> JitSettings | None:
    """The settings to disable or remove an account with: the current ones widened by what was recorded
    as granted (bindings in a namespace the project no longer lists, groups it no longer allows). None
    when nothing says how: no current settings and no record, or a PostgreSQL grant whose server
    settings are gone with the Project."""
    if not grant:
        return current
    backend = str(grant.get("backend") or "kubernetes")
    namespaces = tuple(str(n) for n in grant.get("namespaces") or ())
    groups = tuple(str(g) for g in grant.get("groups") or ())
    if current is None:
        if backend != "kubernetes":
            return None
        return JitSettings(False, backend, groups, frozenset(), timedelta(0), namespaces, None)
    if current.backend != backend:
        return current
    return JitSettings(
        current.enabled,
        current.backend,
        tuple(dict.fromkeys(current.allowed_groups + groups)),
        current.creator_groups,
        current.max_duration,
        tuple(dict.fromkeys(current.namespaces + namespaces)),
        current.postgresql,
    )


def account_name(spec: Mapping[str, Any]) -> str:
    explicit = spec.get("accountName")
    return explicit if isinstance(explicit, str) and explicit else f"{spec.get('owner', '')}_jit"


def service_account_name(account: str) -> str:
    """Kubernetes names cannot hold _; account names cannot hold -, so the mapping is one to one."""
    return account.replace("_", "-")


@dataclass(frozen=True)
class Request:
    owner: str
    account: str
    groups: tuple[str, ...]
    reason: str
    duration: timedelta


def check(
    spec: Mapping[str, Any],
    settings: JitSettings | None,
    project: str,
    actor: str,
    actor_groups: Iterable[str],
) -> Request:
    """Everything a JitAccount must satisfy, each problem with its own message (the API server checks
    the same at admission; this is the operator's own line of defence)."""
    problems: list[str] = []
    groups_of_actor = frozenset(actor_groups)
    is_admin = bool(groups_of_actor & ADMIN_GROUPS)
    owner = str(spec.get("owner") or "")
    account = account_name(spec)
    if settings is None or not settings.enabled:
        raise SpecError([f"project {project} does not allow JIT accounts (spec.jit.enabled)"])
    if len(account) > NAME_MAX:
        problems.append(f"account name {account!r} is {len(account)} characters; at most {NAME_MAX}")
    elif not _ACCOUNT.match(account):
        problems.append(f"account name {account!r} must look like <name>_jit (a-z, 0-9, _)")
    explicit = spec.get("accountName")
    if actor and explicit and explicit != f"{owner}_jit" and not is_admin:
        problems.append(f"only kubepam:security-admins choose spec.accountName (yours is {owner}_jit)")
    if actor and actor != owner and not is_admin:
        problems.append(f"{actor} may only create JIT accounts they own (owner is {owner})")
    if actor and not is_admin and not (groups_of_actor & settings.creator_groups):
        creators = ", ".join(sorted(settings.creator_groups)) or "admins only"
        problems.append(f"{actor} may not create JIT accounts in project {project} (creators: {creators})")
    groups = tuple(spec.get("groups") or ())
    unknown = [g for g in groups if g not in settings.allowed_groups]
    if not groups:
        problems.append("spec.groups: at least one group is required")
    if unknown:
        problems.append(
            f"group {', '.join(unknown)} is not in project {project}'s allowed JIT groups "
            f"({', '.join(settings.allowed_groups)})"
        )
    reason = str(spec.get("reason") or "").strip()
    if len(reason) < 3:
        problems.append("spec.reason: a reason is required")
    duration = timedelta(0)
    try:
        duration = parse_duration(spec.get("duration", ""))
    except ValueError as exc:
        problems.append(f"spec.duration: {exc}")
    else:
        if duration > settings.max_duration:
            problems.append(
                f"spec.duration {format_duration(duration)} exceeds project {project}'s maximum "
                f"{format_duration(settings.max_duration)}"
            )
    if problems:
        raise SpecError(problems)
    return Request(owner, account, groups, reason, duration)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def needs_activation(phase: str | None, generation: int, activated_generation: int | None) -> bool:
    """A new account, or a spec change since the last activation (a new reason and duration)."""
    return (
        phase in (None, "", "Pending", "Failed")
        or activated_generation is None
        or generation > activated_generation
    )


def same_reason_again(history: Sequence[Mapping[str, Any]], reason: str, phase: str | None) -> bool:
    """Re-enabling a disabled account takes a new reason, as Quickpass asks."""
    return phase == "Disabled" and bool(history) and history[-1].get("reason") == reason


def with_history(history: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Append an activation, keeping the most recent HISTORY_MAX."""
    return [dict(h) for h in [*history, entry]][-HISTORY_MAX:]
