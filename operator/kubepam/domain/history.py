"""History as flat rows a person can filter and export, for the console's History page and
`kubepam history` alike.

Two sources: AccessRecords (domain/records.py), one row each, the history that outlives its objects
(finished checkouts with their approvers, ended JIT activations, issued or denied certificates); and the
live Checkouts and JitAccounts a person can list, in more detail (granted, denied, elevated, each
approver's vote, break-glass, checked in, rotated; each activation), which also shows what is still
going on. A record whose object is still listed is left out (its live rows tell more). Built only from
what the person's own token could list, so RBAC decides what history they see."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from kubepam.domain.approvals import votes_of

KINDS = (
    "checkout",
    "denied",
    "elevation",
    "approval",
    "breakglass",
    "checkin",
    "rotation",
    "jit",
    "certificate",
)
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


def record_rows(record: Mapping[str, Any]) -> list[Row]:
    """One row for an AccessRecord: what it was, who, where, and how it ended."""
    meta, spec = record.get("metadata") or {}, record.get("spec") or {}
    kind = str(spec.get("kind") or "")
    outcome = str(spec.get("outcome") or "")
    if kind == "checkout" and outcome == "Denied":
        kind = "denied"
    detail = f"{outcome}: {spec.get('detail', '')}"
    if spec.get("reason"):
        detail += f"; reason: {spec['reason']}"
    return [
        Row(
            str(spec.get("time") or spec.get("finishedAt") or ""),
            kind,
            str(spec.get("who") or ""),
            str(meta.get("namespace") or ""),
            str(spec.get("project") or ""),
            str(spec.get("account") or spec.get("server") or ""),
            detail,
        )
    ]


def _record_key(record: Mapping[str, Any]) -> tuple[str, str]:
    spec = record.get("spec") or {}
    uid = str((spec.get("source") or {}).get("uid") or "")
    return (uid, str(spec.get("time") or "")) if spec.get("kind") == "jit" else (uid, "")


def _newest_first(rows: list[Row]) -> list[Row]:
    # Newest first; within one instant, in the order things happen (checkout, elevation, approval, ...).
    return sorted(rows, key=lambda r: (r.time, KINDS.index(r.kind) if r.kind in KINDS else 0), reverse=True)


def history(
    checkouts: Iterable[Mapping[str, Any]],
    jit_accounts: Iterable[Mapping[str, Any]],
    records: Iterable[Mapping[str, Any]] = (),
) -> list[Row]:
    checkouts, jit_accounts = list(checkouts), list(jit_accounts)
    rows = [r for obj in checkouts for r in checkout_rows(obj)]
    rows += [r for obj in jit_accounts for r in jit_rows(obj)]
    live = {(str((obj.get("metadata") or {}).get("uid") or ""), "") for obj in checkouts}
    live |= {
        (str((obj.get("metadata") or {}).get("uid") or ""), str(entry.get("from") or ""))
        for obj in jit_accounts
        for entry in (obj.get("status") or {}).get("history") or []
    }
    rows += [r for rec in records if _record_key(rec) not in live for r in record_rows(rec)]
    return _newest_first(rows)


def _moment(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def narrow(
    rows: Sequence[Row],
    *,
    person: str = "",
    account: str = "",
    project: str = "",
    kind: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Row]:
    """Rows for exact who / account / project / kind (empty: any), with a time in [since, until)."""
    out = []
    for r in rows:
        if (person and r.who != person) or (account and r.account != account):
            continue
        if (project and r.project != project) or (kind and r.kind != kind):
            continue
        if since is not None or until is not None:
            when = _moment(r.time)
            if when is None or (since is not None and when < since) or (until is not None and when >= until):
                continue
        out.append(r)
    return out


def select(rows: Sequence[Row], *, kind: str = "", text: str = "") -> list[Row]:
    """Rows of one kind (or all) whose fields contain `text` (case-insensitive)."""
    needle = text.strip().lower()
    return [
        r
        for r in rows
        if (not kind or r.kind == kind)
        and (not needle or any(needle in str(v).lower() for v in r.as_dict().values()))
    ]


def to_csv(rows: Iterable[Row]) -> str:
    """The rows as CSV with a header (FIELDS); a cell starting with = + - @ is text, never a formula."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("'" + v if v[:1] in "=+-@\t\r" else v) for k, v in r.as_dict().items()})
    return out.getvalue()


def to_json(rows: Iterable[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2)
