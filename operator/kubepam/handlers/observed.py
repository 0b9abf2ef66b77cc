"""What /metrics reports about current state, read at scrape time (adapters/metrics.py StateCollector).

Checkouts and JIT accounts by phase, the waiting line and open approvals come from two kopf indexes on
the VIEW registry, so every replica (leader or not) reports the same counts from its own watch, and no
replica pushes or keeps a gauge that could drift. Each index stores a few words per object under a
handful of keys (the phase, "waiting", "approval"), so a scrape reads ``len()`` of a few stores, never
a loop over ten thousand objects (only the open approvals are scanned, for the oldest one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import kopf

from kubepam.adapters import metrics
from kubepam.domain.checkout import Phase
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.handlers.registries import VIEW

WAITING = ("waiting",)
APPROVAL = ("approval",)
_WAITING_PHASES = frozenset({Phase.QUEUED.value, Phase.OFFERED.value})


def _requested_at(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


@kopf.index(GROUP, VERSION, "checkouts", registry=VIEW)
def checkout_metrics_index(status: kopf.Status, **_: Any) -> dict[Any, Any]:
    phase = str(status.get("phase") or Phase.PENDING.value)
    keys: dict[Any, Any] = {("phase", phase): True}
    if phase in _WAITING_PHASES:
        keys[WAITING] = True
    request = status.get("approvalRequest") or {}
    if isinstance(request, Mapping) and request.get("state") == "Pending":
        keys[APPROVAL] = _requested_at(request.get("requestedAt"))
    return keys


@kopf.index(GROUP, VERSION, "jitaccounts", registry=VIEW)
def jit_metrics_index(status: kopf.Status, **_: Any) -> dict[Any, Any]:
    return {("phase", str(status.get("phase") or "Pending")): True}


def phase_counts(index: Mapping[Any, Any]) -> dict[str, int]:
    return {key[1]: len(store) for key, store in list(index.items()) if key[0] == "phase"}


def approvals(index: Mapping[Any, Any], now: datetime) -> metrics.Approvals:
    store = index.get(APPROVAL)
    times = [t for t in (store or ()) if isinstance(t, datetime)]
    oldest = max(0.0, (now - min(times)).total_seconds()) if times else 0.0
    return metrics.Approvals(len(store) if store else 0, oldest)


def wire(
    indexes: Mapping[str, Any],
    clock: Callable[[], datetime],
    scheduler: Any,
    jwks: Any,
    leading: Callable[[], bool],
) -> None:
    """Point the scrape-time gauges at this process's indexes, scheduler, JWKS cache and elector."""
    checkouts = indexes["checkout_metrics_index"]
    jits = indexes["jit_metrics_index"]
    state = metrics.STATE
    state.checkout_phases = lambda: phase_counts(checkouts)
    state.checkout_queue_length = lambda: len(checkouts.get(WAITING) or ())
    state.approvals = lambda: approvals(checkouts, clock())
    state.jit_states = lambda: phase_counts(jits)
    state.scheduler = lambda: metrics.SchedulerDepth(len(scheduler), scheduler.queued())
    state.jwks = jwks.cache_states
    state.leader = leading
