"""The console's history: what happened to checkouts (granted, denied, elevated, each approver's vote,
break-glass, checked in, rotated) and JIT accounts (each activation), as flat rows a person can filter
and export. Built only from the objects the person's own token could list, so RBAC decides what history
they see."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kubepam.domain.approvals import votes_of

KINDS = ("checkout", "denied", "elevation", "approval", "breakglass", "checkin", "rotation", "jit")
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


def _votes(
    status: Mapping[str, Any], requester: str, fallback: str, row: Callable[[str, str, str, str], Row]
) -> list[Row]:
    """One row per vote in status.approvals (who, what, on which request, their comment). Votes carry no
    time: one on the current request is placed when it was decided (or opened); earlier requests are no
    longer in the status, so their votes take `fallback` (the grant)."""
    request = status.get("approvalRequest") or {}
    out = []
    for vote in votes_of(status.get("approvals")):
        current = vote.request == request.get("id")
        when = str(request.get("decidedAt") or request.get("requestedAt") or "") if current else ""
        detail = f"{vote.decision} {vote.request} for {requester}"
        if vote.comment:
            detail += f": {vote.comment}"
        out.append(row(when or fallback, "approval", vote.approver, detail))
    return out


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
        created = str(meta.get("creationTimestamp", ""))
        rows.append(row(created, "denied", requester, str(status.get("message", ""))))
        return rows + _votes(status, requester, created, row)  # the approvers who refused it, if they did
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
    rows += _votes(status, requester, granted or str(meta.get("creationTimestamp", "")), row)
    glass = status.get("breakGlass") or {}
    if glass.get("used"):
        why = (spec.get("breakGlass") or {}).get("reason") or ""
        rows.append(
            row(
                str(glass.get("at") or granted),
                "breakglass",
                requester,
                f"approved their own {str(glass.get('target') or 'request').lower()}"
                + (f", window capped at {glass['window']}" if glass.get("window") else "")
                + (f"; reason: {why}" if why else ""),
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
