"""AccessRecords: the history that outlives the objects it is about.

When a Checkout reaches a final phase, a JIT account's activation ends, or a certificate request is
issued or denied, the operator writes one AccessRecord in the same namespace (crds/accessrecord.yaml).
Approval votes are part of their checkout's record (``approvers``), not records of their own: a vote
means nothing without the checkout it answered. A record is written once and never changed, and the
operator deletes it when the retention (KUBEPAM_HISTORY_RETENTION) after ``finishedAt`` has passed.

Names are derived from the source object's uid (plus the window's start for a JIT activation), so a
retry, a restart or a second leader writes the same name: the API server answers 409 and the record is
already there. Nothing secret is copied: no Secret names, passwords, certificates, keys or CSRs.

Pure: no clock reads (``now`` is passed in), no API calls.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubepam.domain.approvals import votes_of
from kubepam.domain.checkout import FINAL_PHASES
from kubepam.domain.conditions import rfc3339
from kubepam.domain.kinds import API_VERSION

KIND = "AccessRecord"
PLURAL = "accessrecords"
RECORD_KINDS = ("checkout", "jit", "certificate")
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kubepam"
LABEL_KIND = "kubepam.io/record-kind"
LABEL_PERSON = "kubepam.io/person"
LABEL_PROJECT = "kubepam.io/project"
CERTIFICATE_KINDS = {"SSHCertificateRequest": "ssh", "X509CertificateRequest": "x509"}
REASON_MAX = 1024
DETAIL_MAX = 2048
_LABEL = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_NAME_PART = re.compile(r"[^a-z0-9-]+")


def label_value(text: str) -> str:
    """A label value for a person or project: the text itself when it is a valid label value (at most 63
    characters of letters, digits, '-', '_', '.', alphanumeric at both ends), else ``sha256-`` and the
    first 40 hex digits of its SHA-256 (e.g. ``alice@example.com`` or ``oidc:carol``). Select with the
    same function (`kubepam history --person` does); the label narrows, spec.who is the truth."""
    if _LABEL.match(text):
        return text
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def record_name(kind: str, source_name: str, uid: str, discriminator: str = "") -> str:
    """``<kind>-<source name>-<hash>``: readable, at most 253 characters, and the same on every retry."""
    digest = hashlib.sha256(f"{uid}/{discriminator}".encode()).hexdigest()[:12]
    readable = _NAME_PART.sub("-", source_name.lower()).strip("-")[:200].strip("-")
    return f"{kind}-{readable}-{digest}" if readable else f"{kind}-{digest}"


def _cut(text: Any, limit: int) -> str:
    value = str(text or "")
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class Record:
    kind: str
    name: str
    namespace: str
    time: str
    finished_at: str
    who: str
    source_kind: str
    source_name: str
    source_uid: str
    outcome: str
    groups: tuple[str, ...] = ()
    workload_role: str = ""
    project: str = ""
    account: str = ""
    server: str = ""
    reason: str = ""
    elevation: str = ""
    break_glass: bool = False
    approvers: tuple[Mapping[str, str], ...] = field(default=())
    detail: str = ""

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "kind": self.kind,
            "time": self.time or self.finished_at,
            "finishedAt": self.finished_at,
            "who": self.who,
            "source": {"kind": self.source_kind, "name": self.source_name, "uid": self.source_uid},
            "outcome": self.outcome,
        }
        optional: dict[str, Any] = {
            "groups": list(self.groups)[:64],
            "workloadRole": self.workload_role,
            "project": self.project,
            "account": self.account,
            "server": self.server,
            "reason": _cut(self.reason, REASON_MAX),
            "elevation": self.elevation,
            "breakGlass": self.break_glass,
            "approvers": [dict(a) for a in self.approvers][:64],
            "detail": _cut(self.detail, DETAIL_MAX),
        }
        spec.update({k: v for k, v in optional.items() if v})
        return spec

    def manifest(self) -> dict[str, Any]:
        labels = {MANAGED_BY: MANAGER, LABEL_KIND: self.kind, LABEL_PERSON: label_value(self.who)}
        if self.project:
            labels[LABEL_PROJECT] = label_value(self.project)
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "spec": self.spec(),
        }


def _ready_since(status: Mapping[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("lastTransitionTime") or "")
    return ""


def _parts(obj: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return (
        dict(obj.get("metadata") or {}),
        dict(obj.get("spec") or {}),
        dict(obj.get("status") or {}),
    )


def checkout_record(obj: Mapping[str, Any], now: datetime, *, deleted: bool = False) -> Record | None:
    """The record of a Checkout in a final phase; or, when it was deleted (``deleted``) after it had
    been granted but before it ended, one with outcome Deleted. None while it is still going on."""
    meta, spec, status = _parts(obj)
    phase = str(status.get("phase") or "")
    granted = str(status.get("grantedAt") or "")
    if phase in FINAL_PHASES:
        outcome = phase
    elif deleted and granted:
        outcome = "Deleted"
    else:
        return None
    created = str(meta.get("creationTimestamp") or "")
    if outcome == "Expired":
        finished = str(status.get("expiresAt") or "") or _ready_since(status)
    elif outcome == "Deleted":
        finished = rfc3339(now)
    else:
        finished = _ready_since(status)
    finished = finished or rfc3339(now)
    votes = votes_of(status.get("approvals"))
    elevation = str((status.get("elevation") or {}).get("state") or "")
    glass = status.get("breakGlass") or {}
    if outcome == "Denied":
        detail = f"denied: {status.get('message', '')}"
    elif outcome == "Cancelled":
        detail = "left the waiting line" + (f": {status.get('message')}" if status.get("message") else "")
    else:
        until = status.get("expiresAt") or ""
        detail = f"granted {granted or '?'} until {until}; {status.get('checkinReason') or outcome}"
    if elevation in ("", "NOT_REQUIRED", "NOT_REQUESTED"):
        elevation = ""
    else:
        detail += f"; elevation {elevation}"
    if glass.get("used"):
        detail += f"; break-glass ({str(glass.get('target') or 'request').lower()})"
    if votes:
        detail += "; " + ", ".join(f"{v.decision} by {v.approver}" for v in votes)
    uid = str(meta.get("uid") or "")
    name = str(meta.get("name") or "")
    return Record(
        kind="checkout",
        name=record_name("checkout", name, uid),
        namespace=str(meta.get("namespace") or ""),
        time=granted or created,
        finished_at=finished,
        who=str(spec.get("requester") or ""),
        source_kind="Checkout",
        source_name=name,
        source_uid=uid,
        outcome=outcome,
        groups=tuple(str(g) for g in spec.get("groups") or ()),
        workload_role=str(spec.get("workloadRole") or ""),
        project=str(spec.get("project") or ""),
        account=str(spec.get("account") or ""),
        reason=str(spec.get("reason") or ""),
        elevation=elevation,
        break_glass=bool(glass.get("used")),
        approvers=tuple(
            {"approver": v.approver, "request": v.request, "decision": v.decision, "comment": v.comment}
            for v in votes
        ),
        detail=detail,
    )


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def jit_records(obj: Mapping[str, Any], now: datetime, *, deleted: bool = False) -> list[Record]:
    """One record per ended activation in status.history: every window but the last, the last once the
    account is Disabled (Expired, or Disabled when its owner disabled it early), or once the JitAccount
    was deleted (Deleted while its window was still open)."""
    meta, spec, status = _parts(obj)
    history = [h for h in status.get("history") or [] if isinstance(h, Mapping) and h.get("from")]
    phase = str(status.get("phase") or "")
    uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
    account = str(status.get("accountName") or f"{spec.get('owner', '')}_jit")
    out = []
    for index, entry in enumerate(history):
        last = index == len(history) - 1
        until = str(entry.get("until") or "")
        end = _parse(until)
        if not last:  # a later window began: this one ended at its end, or when the next one began
            following = str(history[index + 1]["from"])
            replaced = end is not None and (after := _parse(following)) is not None and after < end
            outcome, finished = ("Superseded", following) if replaced else ("Expired", until)
        elif phase == "Disabled":
            early = bool(spec.get("disabled")) and str(status.get("expiresAt") or until) != until
            outcome = "Disabled" if early else "Expired"
            finished = str(status.get("expiresAt") or until) if early else until
        elif deleted:
            open_window = end is None or end > now
            outcome = "Deleted" if open_window else "Expired"
            finished = rfc3339(now) if open_window else until
        else:
            continue
        groups = tuple(str(g) for g in entry.get("groups") or ())
        out.append(
            Record(
                kind="jit",
                name=record_name("jit", name, uid, str(entry["from"])),
                namespace=str(meta.get("namespace") or ""),
                time=str(entry["from"]),
                finished_at=finished or rfc3339(now),
                who=str(spec.get("owner") or entry.get("by") or ""),
                source_kind="JitAccount",
                source_name=name,
                source_uid=uid,
                outcome=outcome,
                groups=groups,
                project=str(spec.get("project") or ""),
                account=account,
                reason=str(entry.get("reason") or ""),
                detail=f"{', '.join(groups)} from {entry['from']} until {until}; "
                f"enabled by {entry.get('by') or spec.get('owner', '')}",
            )
        )
    return out


def certificate_record(kind: str, obj: Mapping[str, Any], now: datetime) -> Record | None:
    """The record of an SSH or X.509 certificate request once it is Issued or Denied (never the
    certificate, the public key or the CSR: the serial, principals and validity identify it)."""
    meta, spec, status = _parts(obj)
    phase = str(status.get("phase") or "")
    if phase not in ("Issued", "Denied"):
        return None
    flavour = CERTIFICATE_KINDS.get(kind, kind.lower())
    created = str(meta.get("creationTimestamp") or "") or rfc3339(now)
    if phase == "Issued":
        principals = ", ".join(str(p) for p in status.get("principals") or ())
        detail = (
            f"{flavour} certificate serial {status.get('serial', '')} for {principals or '-'}, "
            f"valid {status.get('validAfter', '')} to {status.get('validBefore', '')}"
        )
        if status.get("policy"):
            detail += f"; policy {status['policy']}"
        # the access it gave ends when the certificate does: kept for the retention after that
        finished = str(status.get("validBefore") or "") or _ready_since(status) or created
    else:
        detail = f"{flavour} certificate denied: {status.get('reason', '')}"
        finished = _ready_since(status) or created
    uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
    return Record(
        kind="certificate",
        name=record_name("certificate", name, uid),
        namespace=str(meta.get("namespace") or ""),
        time=created,
        finished_at=finished,
        who=str(spec.get("requester") or ""),
        source_kind=kind,
        source_name=name,
        source_uid=uid,
        outcome=phase,
        groups=tuple(str(g) for g in spec.get("groups") or ()),
        project=str(spec.get("project") or ""),
        server=str(spec.get("server") or ""),
        detail=detail,
    )


def owned(obj: Mapping[str, Any]) -> bool:
    """A record the operator wrote (its managed-by and record-kind labels): the only ones it deletes."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGER and labels.get(LABEL_KIND) in RECORD_KINDS


def expires_at(obj: Mapping[str, Any], retention: timedelta) -> datetime | None:
    """When a record is due for deletion: ``spec.finishedAt`` (else its creation) plus the retention."""
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    when = _parse(spec.get("finishedAt")) or _parse(meta.get("creationTimestamp"))
    return None if when is None else when + retention
