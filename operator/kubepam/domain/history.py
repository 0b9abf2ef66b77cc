"""The console's history: what happened to checkouts (granted, denied, elevated, approved, checked in,
rotated) and JIT accounts (each activation), as flat rows a person can filter and export. Built only
from the objects the person's own token could list, so RBAC decides what history they see."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("checkout", "denied", "elevation", "approval", "checkin", "rotation", "jit")
FIELDS = ("time", "kind", "who", "namespace", "project", "account", "detail")


@dataclass(frozen=True)
class Row:
    time: str
    kind: str
    who: str
    namespace: str
    project: str
    account: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _ready_since(status: Mapping[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("lastTransitionTime") or "")
    return ""


def checkout_rows(obj: Mapping[str, Any]) -> list[Row]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ns, project, account = (
        str(meta.get("namespace", "")),
        str(spec.get("project", "")),
        str(spec.get("account", "")),
    )
    requester = str(spec.get("requester", ""))
    phase = status.get("phase")

    def row(time: str, kind: str, who: str, detail: str) -> Row:
        return Row(time, kind, who, ns, project, account, detail)

    rows: list[Row] = []
    if phase == "Denied":
        rows.append(
            row(str(meta.get("creationTimestamp", "")), "denied", requester, str(status.get("message", "")))
        )
        return rows
    granted = str(status.get("grantedAt") or "")
    if granted:
        rows.append(
            row(
                granted,
                "checkout",
                requester,
                f"until {status.get('expiresAt', '')}; reason: {spec.get('reason', '')}",
            )
        )
    elevation = status.get("elevation") or {}
    state = elevation.get("state")
    if state not in (None, "", "NOT_REQUIRED", "NOT_REQUESTED"):
        why = (spec.get("elevation") or {}).get("reason") or ""
        rows.append(row(granted, "elevation", requester, f"{state}" + (f"; reason: {why}" if why else "")))
    approval = status.get("approval") or {}
    if approval.get("decision"):
        rows.append(
            row(
                granted,
                "approval",
                str(approval.get("approver", "")),
                f"{approval['decision']} for {requester}"
                + (f": {approval['reason']}" if approval.get("reason") else ""),
            )
        )
    if phase in ("CheckedIn", "Expired"):
        reason = status.get("checkinReason") or phase
        rows.append(
            row(_ready_since(status) or str(status.get("expiresAt", "")), "checkin", requester, f"{reason}")
        )
    rotation = status.get("rotation") or {}
    if rotation.get("required"):
        done = rotation.get("completedAt")
        rows.append(
            row(
                str(done or ""),
                "rotation",
                "kubepam",
                "password rotated"
                if done
                else f"rotation pending: {rotation.get('lastError') or 'in progress'}",
            )
        )
    return rows


def jit_rows(obj: Mapping[str, Any]) -> list[Row]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    account = str(status.get("accountName") or f"{spec.get('owner', '')}_jit")
    return [
        Row(
            str(entry.get("from", "")),
            "jit",
            str(entry.get("by", "")),
            str(meta.get("namespace", "")),
            str(spec.get("project", "")),
            account,
            f"{', '.join(entry.get('groups') or [])} until {entry.get('until', '')}; "
            f"reason: {entry.get('reason', '')}",
        )
        for entry in status.get("history") or []
    ]


def history(checkouts: Iterable[Mapping[str, Any]], jit_accounts: Iterable[Mapping[str, Any]]) -> list[Row]:
    rows = [r for obj in checkouts for r in checkout_rows(obj)]
    rows += [r for obj in jit_accounts for r in jit_rows(obj)]
    # Newest first; within one instant, in the order things happen (checkout, elevation, approval, ...).
    return sorted(rows, key=lambda r: (r.time, KINDS.index(r.kind)), reverse=True)


def select(rows: Sequence[Row], *, kind: str = "", text: str = "") -> list[Row]:
    """Rows of one kind (or all) whose fields contain `text` (case-insensitive)."""
    needle = text.strip().lower()
    return [
        r
        for r in rows
        if (not kind or r.kind == kind)
        and (not needle or any(needle in str(v).lower() for v in r.as_dict().values()))
    ]
