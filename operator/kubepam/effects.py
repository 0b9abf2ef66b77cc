"""What the operator does when `kubepam plan`'s change is applied, beyond who may reach what: the objects
it derives from a Project (CA key ring Secret, CA and JIT-settings ConfigMaps, enrollment Secret) that it
will create, update or leave to the garbage collector, and the live checkouts and JIT accounts whose
access the change does not end.

The operator never shortens a live grant when a policy changes: a checkout keeps its expiry, a JIT
account its window, an issued certificate its lifetime; the change applies to the next request. A
reviewer must see who keeps access after a narrowing change, and until when, so the plan lists them
("=") with the way to end each now. Names come from the operator's own functions (services/projects,
domain/jit); the Project's CA plan from ``domain/project.plan_ca``'s rule (a higher
rotation.generation adds a generation, the old one stays trusted for the overlap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubepam.domain.access import Change
from kubepam.domain.durations import format_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.jit import admission_params, settings_configmap_name
from kubepam.domain.project import ProjectSpec, parse_project
from kubepam.services.projects import (
    ca_configmap_name,
    ca_secret_name,
    enrollment_secret_name,
)

Key = tuple[str, str, str]


@dataclass(frozen=True, order=True)
class Effect:
    sign: str  # + create, ~ update, - delete, = keeps its access
    kind: str
    namespace: str
    name: str
    why: str

    def line(self) -> str:
        return f"{self.sign} {self.kind} {self.namespace}/{self.name}: {self.why}"

    @property
    def changes_something(self) -> bool:
        return self.sign != "="


def object_key(obj: Mapping[str, Any]) -> Key:
    """kind, namespace, name: how `kubectl apply` matches a file's object to a live one."""
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _project(obj: Mapping[str, Any] | None) -> ProjectSpec | None:
    if obj is None:
        return None
    try:
        return parse_project(obj.get("spec") or {})
    except SpecError:
        return None  # validate reports it; the operator leaves such a Project Stalled


def _uid(*objs: Mapping[str, Any] | None) -> str:
    for obj in objs:
        uid = ((obj or {}).get("metadata") or {}).get("uid")
        if uid:
            return str(uid)
    return "<uid>"


def project_effects(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[Effect]:
    """What the operator creates, updates or lets go for one Project going from ``before`` to ``after``."""
    _, ns, name = object_key(after or before or {})
    uid = _uid(before, after)
    old, new = _project(before), _project(after)
    keys, ca_map, jit_map = ca_secret_name(name, uid), ca_configmap_name(name), settings_configmap_name(name)
    enroll = enrollment_secret_name(name, uid)
    out: list[Effect] = []
    if after is None:
        if before is not None:
            gone = f"garbage-collected with Project {name}"
            out += [Effect("-", "Secret", ns, keys, f"CA key ring, {gone}")]
            out += [Effect("-", "ConfigMap", ns, m, gone) for m in (ca_map, jit_map)]
            if old is not None and old.enrollment_enabled:
                out.append(Effect("-", "Secret", ns, enroll, gone))
        return out
    if new is None:
        return out
    if old is None and before is None:
        out.append(Effect("+", "Secret", ns, keys, f"CA key ring: a new {new.key_type} CA"))
        out.append(Effect("+", "ConfigMap", ns, ca_map, "the CA public keys servers trust"))
        out.append(
            Effect("+", "ConfigMap", ns, jit_map, "JIT settings, read by the JitAccount admission policy")
        )
        if new.enrollment_enabled:
            out.append(Effect("+", "Secret", ns, enroll, "the server enrollment token"))
        return out
    if old is None:
        return out
    if new.rotation_generation > old.rotation_generation:
        out.append(
            Effect(
                "~",
                "Secret",
                ns,
                keys,
                f"CA rotation: a new {new.key_type} generation {new.rotation_generation}; the current one "
                f"stays trusted for {format_duration(new.overlap)}",
            )
        )
        out.append(Effect("~", "ConfigMap", ns, ca_map, "publishes the old and new CA during the overlap"))
    elif new.key_type != old.key_type:
        out.append(
            Effect(
                "~",
                "Secret",
                ns,
                keys,
                f"no change yet: keyType {old.key_type} -> {new.key_type} takes effect at the next rotation "
                "(raise certificateAuthority.rotation.generation)",
            )
        )
    if admission_params(name, new.jit) != admission_params(name, old.jit):
        out.append(Effect("~", "ConfigMap", ns, jit_map, "JIT settings: new JIT requests are judged by them"))
    if new.enrollment_enabled != old.enrollment_enabled:
        if new.enrollment_enabled:
            out.append(Effect("+", "Secret", ns, enroll, "the server enrollment token"))
        else:
            out.append(Effect("-", "Secret", ns, enroll, "enrollment turned off"))
    elif new.enrollment_enabled and new.enrollment_generation > old.enrollment_generation:
        out.append(Effect("~", "Secret", ns, enroll, "a new enrollment token; the old one stops working"))
    return out


def _accounts(obj: Mapping[str, Any] | None) -> set[str]:
    spec = _project(obj)
    return {str(a.get("name")) for a in spec.shared_accounts} if spec else set()


def live_effects(
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]],
    changes: Sequence[Change],
    requests: Sequence[Mapping[str, Any]],
) -> list[Effect]:
    """The Active checkouts and JIT accounts a narrowing change reaches: they keep their access until
    their own expiry (the operator judges new requests, not granted ones)."""
    old = {object_key(o): o for o in before}
    new = {object_key(o): o for o in after}
    narrowed = {(c.target.kind, c.target.namespace, c.target.name) for c in changes if not c.widening}
    out: list[Effect] = []
    for obj in requests:
        status, spec = obj.get("status") or {}, obj.get("spec") or {}
        kind, ns, name = object_key(obj)
        project = str(spec.get("project", ""))
        gone_project = ("Project", ns, project) in old and ("Project", ns, project) not in new
        if status.get("phase") != "Active":
            continue
        until = str(status.get("expiresAt") or "its expiry")
        if kind == "Checkout":
            account = str(spec.get("account", ""))
            reached = (
                gone_project
                or ("checkout", ns, f"{project}/{account}") in narrowed
                or (
                    account in _accounts(old.get(("Project", ns, project)))
                    and account not in _accounts(new.get(("Project", ns, project)))
                )
            )
            if reached:
                who = spec.get("requester", "?")
                out.append(
                    Effect(
                        "=",
                        kind,
                        ns,
                        name,
                        f"{who} keeps {account} until {until}; the change applies to new checkouts "
                        "(a security admin ends it now with spec.checkin.force)",
                    )
                )
        elif kind == "JitAccount" and (gone_project or ("jit", ns, project) in narrowed):
            groups = ",".join(spec.get("groups") or [])
            account = status.get("accountName") or name
            out.append(
                Effect(
                    "=",
                    kind,
                    ns,
                    name,
                    f"{account} keeps {groups} until {until}; the change applies to the next window "
                    "(a security admin ends it now by deleting it)",
                )
            )
    return sorted(out)


def effects(
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]],
    changes: Sequence[Change],
    requests: Sequence[Mapping[str, Any]] = (),
) -> list[Effect]:
    """Every effect of going from ``before`` to ``after`` (the access kinds), with the live requests."""
    old = {object_key(o): o for o in before if o.get("kind") == "Project"}
    new = {object_key(o): o for o in after if o.get("kind") == "Project"}
    out: list[Effect] = []
    for key in sorted(set(old) | set(new)):
        out += project_effects(old.get(key), new.get(key))
    return out + live_effects(before, after, changes, requests)
