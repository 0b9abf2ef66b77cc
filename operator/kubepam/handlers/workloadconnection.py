"""WorkloadConnection handlers: index for the broker, fetch issuer keys, report phase and health.

Status is level-based: every event recomputes the plan from spec, status and the key cache, and
writes only what differs, so a security admin's promotion shows up in conditions at once.
"""

from __future__ import annotations

import contextlib
from typing import Any

import kopf

from kubepam.adapters import audit
from kubepam.adapters.jwks import JwksFetchError
from kubepam.domain.connection import Phase
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import KeysObserved, Plan, plan_connection
from kubepam.handlers.directory import connection_entry, forget_connection
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.runtime import Runtime, runtime
from kubepam.handlers.status import apply_plan, ref, refresh_status
from kubepam.services.workload_identity import ConnectionEntry

PLURAL = "workloadconnections"


def _entry(meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status) -> ConnectionEntry:
    me = ref(meta)
    return connection_entry(me.namespace, me.name, me.generation, spec, status)


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def connections_index(
    meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], ConnectionEntry]:
    entry = _entry(meta, spec, status)
    return {(entry.namespace, entry.name): entry}


def _observed(rt: Runtime, entry: ConnectionEntry) -> KeysObserved | None:
    conn = entry.connection
    if entry.inline_keys is not None:
        return KeysObserved(entry.inline_keys.count, None, "")
    if conn is None or conn.jwks_url is None:
        return None
    state = rt.jwks.state(conn.jwks_url)
    return KeysObserved(state.key_count, state.last_refresh, state.last_error)


def _report(rt: Runtime, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch) -> None:
    observed = _observed(rt, _entry(meta, spec, status))
    apply_plan(plan_connection(spec, status, observed), patch, status, meta)


async def _refresh(rt: Runtime, entry: ConnectionEntry) -> str | None:
    """Fetch the issuer's keys now, and schedule the next background refresh for that URL."""
    conn = entry.connection
    if conn is None or conn.jwks_url is None:
        return None
    schedule_refresh(rt, conn.jwks_url)
    try:
        await rt.jwks.refresh(conn.jwks_url)
    except JwksFetchError as exc:
        return str(exc)
    return None


def schedule_refresh(rt: Runtime, url: str) -> None:
    """Keep issuer keys fresh even when no token arrives (a rotation at the issuer is picked up), through
    the one scheduler: one deadline per JWKS URL, however many connections share it. The statuses of the
    connections using the URL are brought up to date after each refresh."""

    async def refresh_and_report() -> None:
        users = [e for e in rt.directory.all_connections() if e.connection and e.connection.jwks_url == url]
        if not users:
            return  # no connection uses this URL any more: stop refreshing it
        schedule_refresh(rt, url)
        with contextlib.suppress(JwksFetchError):
            await rt.jwks.refresh(url)
        for entry in users:
            await _write_status(rt, entry.namespace, entry.name)

    rt.scheduler.schedule(("jwks", url), rt.clock() + rt.settings.jwks_refresh, refresh_and_report)


async def _write_status(rt: Runtime, namespace: str, name: str) -> None:
    async def plan_of(obj: dict[str, Any]) -> Plan:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        entry = connection_entry(namespace, name, ref(obj.get("metadata") or {}).generation, spec, status)
        return plan_connection(spec, status, _observed(rt, entry))

    await refresh_status(rt.objects, PLURAL, namespace, name, plan_of)


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
async def reconcile_connection(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    rt = runtime(memo)
    error = await _refresh(rt, _entry(meta, spec, status))
    _report(rt, meta, spec, status, patch)
    if error is not None:
        raise kopf.TemporaryError(f"issuer keys unavailable: {error}", delay=30)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=VIEW)
def connection_seen(type: str, meta: kopf.Meta, status: kopf.Status, memo: Any, **_: Any) -> None:
    """Every replica: the broker's index is warm once connections have been listed."""
    rt = runtime(memo)
    rt.directory.mark_synced()
    me = ref(meta)
    if type == "DELETED":
        forget_connection(me.namespace, me.name)
        PHASES.pop((me.namespace, me.name), None)
    else:
        audit_phase_change(rt, meta, status)


PHASES: dict[tuple[str, str], str] = {}  # status.phase as last seen, by connection (every replica)


def audit_phase_change(rt: Runtime, meta: kopf.Meta, status: kopf.Status) -> None:
    """A security admin promoted (Draft -> Active) or demoted (Active -> Draft) a connection: one audit
    line, from the leader only. Every replica remembers the phases, so a new leader knows them too; a
    change made while no replica ran is not seen as one (the connection's first phase is no change)."""
    me = ref(meta)
    phase = str(status.get("phase") or "")
    before = PHASES.get((me.namespace, me.name))
    PHASES[(me.namespace, me.name)] = phase
    phases = (Phase.DRAFT.value, Phase.ACTIVE.value)
    if before is None or before == phase or before not in phases or phase not in phases:
        return
    if rt.elector is not None and not rt.elector.leading():
        return
    promoted = phase == Phase.ACTIVE.value
    audit.record(
        audit.Action.CONNECTION_PROMOTED if promoted else audit.Action.CONNECTION_DEMOTED,
        audit.Outcome.SUCCESS,
        actor=str(status.get("activatedBy") or "") if promoted else "",
        target=audit.Target("WorkloadConnection", me.namespace, me.name),
        correlation_id=str(meta.get("uid") or ""),
        details={"from": before, "to": phase, "activatedAt": status.get("activatedAt") if promoted else None},
    )


@kopf.on.event(GROUP, VERSION, PLURAL, registry=CONTROL)
def connection_report(
    type: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """The leader: status follows every change (a promotion shows up in conditions at once)."""
    if type != "DELETED":
        _report(runtime(memo), meta, spec, status, patch)
