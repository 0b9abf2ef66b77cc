"""The audit trail: one JSON line per decision, schema ``kubepam.io/audit/v1`` (docs/audit.md).

Lines go to the logger ``kubepam.audit``, which has its own handler writing the bare JSON to stdout
(it does not propagate, so the operator's log format never wraps it), and, when KUBEPAM_AUDIT_FILE is
set, to a size-rotated file as well. :func:`record` never raises and never writes a secret: detail
fields named like a secret, and any value that looks like a JWT, a PEM block or a private key, are
dropped (a warning on ``kubepam.audit_guard`` names the field, never the value).
"""

from __future__ import annotations

import enum
import json
import logging
import logging.handlers
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_SCHEMA = "kubepam.io/audit/v1"
LOGGER = "kubepam.audit"

log = logging.getLogger(LOGGER)
guard_log = logging.getLogger("kubepam.audit_guard")


class Action(enum.StrEnum):
    """Every action the audit trail names; a new one is a minor addition to the v1 schema."""

    TOKEN_ISSUED = "token.issued"
    TOKEN_REFUSED = "token.refused"
    CERTIFICATE_ISSUED = "certificate.issued"
    CERTIFICATE_DENIED = "certificate.denied"
    CHECKOUT_GRANTED = "checkout.granted"
    CHECKOUT_DENIED = "checkout.denied"
    CHECKOUT_QUEUED = "checkout.queued"
    CHECKOUT_OFFERED = "checkout.offered"
    CHECKOUT_OFFER_EXPIRED = "checkout.offer_expired"
    CHECKOUT_CANCELLED = "checkout.cancelled"
    CHECKOUT_CHECKIN = "checkout.checkin"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_APPROVED = "approval.approved"
    APPROVAL_DENIED = "approval.denied"
    APPROVAL_EXPIRED = "approval.expired"
    ROTATION_SUCCEEDED = "rotation.succeeded"
    ROTATION_FAILED = "rotation.failed"
    ELEVATION_REQUESTED = "elevation.requested"
    ELEVATION_APPROVED = "elevation.approved"
    ELEVATION_DENIED = "elevation.denied"
    ELEVATION_GRANTED = "elevation.granted"
    ELEVATION_REMOVED = "elevation.removed"
    JIT_ENABLED = "jit.enabled"
    JIT_DISABLED = "jit.disabled"
    JIT_REFUSED = "jit.refused"
    JIT_REMOVED = "jit.removed"
    CONNECTION_PROMOTED = "connection.promoted"
    CONNECTION_DEMOTED = "connection.demoted"
    BREAKGLASS_USED = "breakglass.used"
    SERVER_LOGIN = "server.login"


class Outcome(enum.StrEnum):
    SUCCESS = "success"  # the action happened (issued, granted, enabled, removed, ...)
    DENIED = "denied"  # refused by policy, an approver or a rule
    PENDING = "pending"  # waits: in line, for approvers, for a claim
    FAILURE = "failure"  # attempted and did not happen (e.g. a failed login)


@dataclass(frozen=True)
class Target:
    kind: str
    namespace: str | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


# ----- the redaction guard ----------------------------------------------------------------------------
SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|private|(^|[_\-.])?key$", re.I)
# A key name the guard lets through although it matches the above: identifiers, never the material.
ALLOWED_KEYS = frozenset({"keyId", "key_id", "tokenType"})
JWT = re.compile(r"\b[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")
PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
PRIVATE_KEY = re.compile(
    r"PRIVATE KEY|openssh-key-v1|\b(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+)\s+AAAA[A-Za-z0-9+/]{40,}"
)


def secret_key_name(key: str) -> bool:
    return key not in ALLOWED_KEYS and bool(SECRET_KEY.search(key))


def secret_value(value: str) -> str | None:
    """Why ``value`` looks like secret material (a JWT, a PEM block, a private or public key), or None."""
    if JWT.search(value):
        return "a JWT"
    if PEM.search(value):
        return "a PEM block"
    if PRIVATE_KEY.search(value):
        return "key material"
    return None


def _clean(value: Any, path: str, dropped: list[str]) -> Any:
    """``value`` with every secret-looking part dropped (JSON-ready: other objects become strings)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if secret_key_name(str(key)):
                dropped.append(f"{where} (its name)")
                continue
            cleaned = _clean(item, where, dropped)
            if cleaned is not _DROP:
                out[str(key)] = cleaned
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_clean(item, f"{path}[]", dropped) for item in value]
        return [i for i in items if i is not _DROP]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    why = secret_value(text)
    if why is not None:
        dropped.append(f"{path} ({why})")
        return _DROP
    return text


_DROP = object()


def _clean_text(value: str, field: str, dropped: list[str]) -> str:
    cleaned = _clean(value, field, dropped)
    return "" if cleaned is _DROP else str(cleaned)


# ----- writing ----------------------------------------------------------------------------------------
class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (a test runner's capture, a redirected stdout)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


_STDOUT = _Stdout()
_STDOUT.setFormatter(logging.Formatter("%(message)s"))
log.addHandler(_STDOUT)
log.setLevel(logging.INFO)
log.propagate = False
_file_handler: logging.Handler | None = None


def configure(path: str, max_bytes: int = 100 * 1024 * 1024, backups: int = 10) -> None:
    """Also write the audit lines to ``path``, rotated at ``max_bytes`` keeping ``backups`` old files
    (KUBEPAM_AUDIT_FILE, _MAX_BYTES, _BACKUPS). An empty path turns the file sink off."""
    global _file_handler
    if _file_handler is not None:
        log.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    _file_handler = handler


def _time(now: datetime | None) -> str:
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def build(
    action: Action | str,
    outcome: Outcome | str,
    *,
    actor: str | None,
    groups: Sequence[str] = (),
    target: Target,
    reason: str = "",
    correlation_id: str = "",
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The v1 record (redacted); :func:`record` writes it."""
    dropped: list[str] = []
    line = {
        "schema": AUDIT_SCHEMA,
        "time": _time(now),
        "action": Action(action).value,
        "outcome": Outcome(outcome).value,
        "actor": _clean_text(actor or "", "actor", dropped),
        "groups": sorted({_clean_text(str(g), "groups[]", dropped) for g in groups} - {""}),
        "target": {
            k: (_clean_text(v, f"target.{k}", dropped) if v else v) for k, v in target.as_dict().items()
        },
        "reason": _clean_text(reason or "", "reason", dropped),
        "correlationId": _clean_text(correlation_id or "", "correlationId", dropped),
        "details": _clean(dict(details or {}), "", dropped),
    }
    if dropped:
        line["redacted"] = sorted(dropped)
        guard_log.warning("audit %s: dropped %s", line["action"], ", ".join(sorted(dropped)))
    return line


def record(
    action: Action | str,
    outcome: Outcome | str,
    *,
    actor: str | None,
    groups: Sequence[str] = (),
    target: Target,
    reason: str = "",
    correlation_id: str = "",
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """Write one audit line; returns what was written (None if it could not be: never raises)."""
    try:
        line = build(
            action,
            outcome,
            actor=actor,
            groups=groups,
            target=target,
            reason=reason,
            correlation_id=correlation_id,
            details=details,
            now=now,
        )
        log.info(json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    except Exception as exc:  # an audit line that cannot be written must not stop the work it describes
        guard_log.warning("could not write an audit line for %s: %s", action, type(exc).__name__)
        return None
    return line


# ----- Kubernetes Events with audit fields (adapters/events.py) ---------------------------------------
# (kind, Event reason) -> (action, outcome). Approval decisions are "<Target><State>" (CheckoutApproved).
EVENT_ACTIONS: dict[tuple[str, str], tuple[Action, Outcome]] = {
    ("Checkout", "CheckedOut"): (Action.CHECKOUT_GRANTED, Outcome.SUCCESS),
    ("Checkout", "Denied"): (Action.CHECKOUT_DENIED, Outcome.DENIED),
    ("Checkout", "Queued"): (Action.CHECKOUT_QUEUED, Outcome.PENDING),
    ("Checkout", "Offered"): (Action.CHECKOUT_OFFERED, Outcome.PENDING),
    ("Checkout", "OfferExpired"): (Action.CHECKOUT_OFFER_EXPIRED, Outcome.FAILURE),
    ("Checkout", "Cancelled"): (Action.CHECKOUT_CANCELLED, Outcome.SUCCESS),
    ("Checkout", "CheckedIn"): (Action.CHECKOUT_CHECKIN, Outcome.SUCCESS),
    ("Checkout", "Expired"): (Action.CHECKOUT_CHECKIN, Outcome.SUCCESS),
    ("Checkout", "Rotated"): (Action.ROTATION_SUCCEEDED, Outcome.SUCCESS),
    ("Checkout", "BreakGlass"): (Action.BREAKGLASS_USED, Outcome.SUCCESS),
    ("Checkout", "Elevated"): (Action.ELEVATION_GRANTED, Outcome.SUCCESS),
    ("Checkout", "ElevationRemoved"): (Action.ELEVATION_REMOVED, Outcome.SUCCESS),
    ("Checkout", "ElevationApproved"): (Action.ELEVATION_APPROVED, Outcome.SUCCESS),
    ("Checkout", "ElevationDenied"): (Action.ELEVATION_DENIED, Outcome.DENIED),
    ("Checkout", "ElevationExpired"): (Action.ELEVATION_DENIED, Outcome.FAILURE),
    ("Checkout", "CheckoutApproved"): (Action.APPROVAL_APPROVED, Outcome.SUCCESS),
    ("Checkout", "CheckoutDenied"): (Action.APPROVAL_DENIED, Outcome.DENIED),
    ("Checkout", "CheckoutExpired"): (Action.APPROVAL_EXPIRED, Outcome.FAILURE),
    ("Checkout", "ExtensionApproved"): (Action.APPROVAL_APPROVED, Outcome.SUCCESS),
    ("Checkout", "ExtensionDenied"): (Action.APPROVAL_DENIED, Outcome.DENIED),
    ("Checkout", "ExtensionExpired"): (Action.APPROVAL_EXPIRED, Outcome.FAILURE),
    ("JitAccount", "Enabled"): (Action.JIT_ENABLED, Outcome.SUCCESS),
    ("JitAccount", "Reenabled"): (Action.JIT_ENABLED, Outcome.SUCCESS),
    ("JitAccount", "Disabled"): (Action.JIT_DISABLED, Outcome.SUCCESS),
    ("JitAccount", "Refused"): (Action.JIT_REFUSED, Outcome.DENIED),
    ("JitAccount", "Removed"): (Action.JIT_REMOVED, Outcome.SUCCESS),
    ("Server", "Login"): (Action.SERVER_LOGIN, Outcome.SUCCESS),
    ("Server", "LoginFailed"): (Action.SERVER_LOGIN, Outcome.FAILURE),
}
# Fields of an Event's audit mapping that are lifted into the record itself (the rest are details).
_ACTOR_FIELDS = ("actor",)
_REASON_FIELDS = ("reason", "why")


def for_event(
    obj: Mapping[str, Any], event_reason: str, fields: Mapping[str, Any], now: datetime | None = None
) -> dict[str, Any] | None:
    """The one audit line of an Event posted with audit fields. The action comes from the fields'
    ``action`` when given, else from the object's kind and the Event's reason; the correlation id is
    the object's uid. Returns what was written."""
    meta = obj.get("metadata") or {}
    kind = str(obj.get("kind") or "")
    details = dict(fields)
    action = details.pop("action", None)
    outcome = details.pop("outcome", None)
    mapped = EVENT_ACTIONS.get((kind, event_reason))
    if action is None and mapped is None:
        guard_log.warning("no audit action for %s event %s; not recorded", kind, event_reason)
        return None
    if action is None and mapped is not None:
        action = mapped[0]
    if outcome is None or outcome not in Outcome.__members__.values():
        if outcome is not None:
            details["result"] = outcome  # e.g. a login's "accepted"/"failed": kept, not the outcome field
        outcome = mapped[1] if mapped is not None else Outcome.SUCCESS
    actor = next((str(details.pop(k)) for k in _ACTOR_FIELDS if details.get(k)), "")
    for k in _ACTOR_FIELDS:
        details.pop(k, None)
    reason = next((str(details[k]) for k in _REASON_FIELDS if details.get(k)), "")
    for k in _REASON_FIELDS:
        details.pop(k, None)
    groups = details.pop("actorGroups", None) or ()
    spec = obj.get("spec") or {}
    if not groups and actor and actor == spec.get("requester"):  # the API server stamped them
        groups = spec.get("groups") or ()
    details["event"] = event_reason
    return record(
        action,
        outcome,
        actor=actor,
        groups=[str(g) for g in groups],
        target=Target(kind, meta.get("namespace"), meta.get("name")),
        reason=reason,
        correlation_id=str(meta.get("uid") or ""),
        details=details,
        now=now,
    )
