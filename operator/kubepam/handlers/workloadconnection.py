"""WorkloadConnection handlers: index for the broker, fetch issuer keys, report phase and health.

Status is level-based: every event recomputes the plan from spec, status and the key cache, and
writes only what differs, so a security admin's promotion shows up in conditions at once.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.adapters.jwks import JwksFetchError
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import KeysObserved, plan_connection
from kubepam.handlers.directory import connection_entry, forget_connection
from kubepam.handlers.runtime import SETTINGS, Runtime, runtime
from kubepam.handlers.status import apply_plan, ref
from kubepam.services.workload_identity import ConnectionEntry

PLURAL = "workloadconnections"


def _entry(meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status) -> ConnectionEntry:
    me = ref(meta)
    return connection_entry(me.namespace, me.name, me.generation, spec, status)


@kopf.index(GROUP, VERSION, PLURAL)
def connections_index(
    meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], ConnectionEntry]:
    entry = _entry(meta, spec, status)
    return {(entry.namespace, entry.name): entry}


def _report(rt: Runtime, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch) -> None:
    conn = _entry(meta, spec, status).connection
    observed = None
    if conn is not None and conn.jwks_url is not None:
        state = rt.jwks.state(conn.jwks_url)
        observed = KeysObserved(state.key_count, state.last_refresh, state.last_error)
    apply_plan(plan_connection(spec, status, observed), patch, status, meta)


async def _refresh(rt: Runtime, entry: ConnectionEntry) -> str | None:
    conn = entry.connection
    if conn is None or conn.jwks_url is None:
        return None
    try:
        await rt.jwks.refresh(conn.jwks_url)
    except JwksFetchError as exc:
        return str(exc)
    return None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_connection(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    rt = runtime(memo)
    error = await _refresh(rt, _entry(meta, spec, status))
    _report(rt, meta, spec, status, patch)
    if error is not None:
        raise kopf.TemporaryError(f"issuer keys unavailable: {error}", delay=30)


@kopf.on.event(GROUP, VERSION, PLURAL)
def connection_event(
    type: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    rt = runtime(memo)
    rt.directory.mark_synced()
    if type == "DELETED":
        me = ref(meta)
        forget_connection(me.namespace, me.name)
        return
    _report(rt, meta, spec, status, patch)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=SETTINGS.jwks_refresh.total_seconds(),
    initial_delay=SETTINGS.jwks_refresh.total_seconds(),
)
async def refresh_keys(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """Keep issuer keys fresh even when no token arrives (rotation at the issuer is picked up)."""
    rt = runtime(memo)
    entry = _entry(meta, spec, status)
    conn = entry.connection
    if conn is not None and conn.jwks_url is not None:
        state = rt.jwks.state(conn.jwks_url)
        fresh = state.last_refresh is not None and rt.clock() - state.last_refresh < SETTINGS.jwks_refresh / 2
        if not fresh:
            await _refresh(rt, entry)
    _report(rt, meta, spec, status, patch)
