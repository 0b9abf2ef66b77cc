"""The one helper for status conditions (kstatus: Ready, Reconciling, Stalled).

Every kind reports health through :func:`health_conditions`, so ``kubectl wait --for=condition=Ready``,
Flux and Argo CD read kubepam objects without custom health scripts. A condition keeps its
``lastTransitionTime`` while its status does not change.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Health(enum.Enum):
    """The three states kstatus understands."""

    READY = "Ready"  # reconciled and usable
    RECONCILING = "Reconciling"  # work in progress, expected to finish by itself
    STALLED = "Stalled"  # cannot progress until somebody changes something


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    observed_generation: int

    def to_dict(self, transition_time: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": transition_time,
        }


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp format (UTC, seconds)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Iterable[Mapping[str, Any]] | None, updates: Iterable[Condition], now: datetime
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``existing``: replace by type, keep transition times of unchanged statuses,
    keep conditions of other types untouched, and return them sorted by type for stable diffs."""
    by_type: dict[str, dict[str, Any]] = {
        str(c.get("type")): dict(c) for c in existing or () if c.get("type")
    }
    stamp = rfc3339(now)
    for cond in updates:
        old = by_type.get(cond.type)
        keep_time = old is not None and old.get("status") == cond.status and old.get("lastTransitionTime")
        by_type[cond.type] = cond.to_dict(str(old["lastTransitionTime"]) if keep_time and old else stamp)
    return [by_type[key] for key in sorted(by_type)]


def health_conditions(
    existing: Iterable[Mapping[str, Any]] | None,
    health: Health,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Set Ready/Reconciling/Stalled consistently for one health state."""
    ready = health is Health.READY
    updates = [
        Condition(READY, "True" if ready else "False", reason, message, generation),
        Condition(
            RECONCILING,
            "True" if health is Health.RECONCILING else "False",
            reason if health is Health.RECONCILING else "Reconciled",
            message if health is Health.RECONCILING else "",
            generation,
        ),
        Condition(
            STALLED,
            "True" if health is Health.STALLED else "False",
            reason if health is Health.STALLED else "NotStalled",
            message if health is Health.STALLED else "",
            generation,
        ),
    ]
    return merge_conditions(existing, updates, now)


def same_conditions(a: Iterable[Mapping[str, Any]] | None, b: Iterable[Mapping[str, Any]] | None) -> bool:
    """Compare condition lists ignoring transition times (to skip no-op status writes)."""

    def strip(items: Iterable[Mapping[str, Any]] | None) -> list[tuple[Any, ...]]:
        return sorted(
            (c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
            for c in items or ()
        )

    return strip(a) == strip(b)


def condition_status(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> str | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None
