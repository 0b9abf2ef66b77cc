"""Server handlers: index servers (project and labels) for policy decisions, and their agents (key
fingerprint) for the broker's signed requests; validate and report, with the agent's heartbeat in the
Ready condition (AgentSilent at the deadline, in the one scheduler)."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import plan_server
from kubepam.domain.policy import ServerView
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.runtime import runtime
from kubepam.handlers.status import apply_plan, ref, utcnow
from kubepam.services.agents import CHANGES, ServerRecord, server_scope

PLURAL = "servers"


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def servers_index(meta: kopf.Meta, spec: kopf.Spec, labels: kopf.Labels, **_: Any) -> dict[Any, ServerView]:
    me = ref(meta)
    return {(me.namespace, me.name): ServerView(me.name, str(spec.get("project", "")), dict(labels))}


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def server_agents_index(
    meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, labels: kopf.Labels, **_: Any
) -> dict[Any, ServerRecord]:
    me = ref(meta)
    agent = status.get("agent") or {}
    record = ServerRecord(
        me.namespace,
        me.name,
        str(meta.get("uid") or ""),
        str(spec.get("project", "")),
        dict(labels),
        str(agent.get("keyFingerprint") or ""),
    )
    return {(me.namespace, me.name): record}


@kopf.on.event(GROUP, VERSION, PLURAL, registry=VIEW)
async def servers_changed(meta: kopf.Meta, **_: Any) -> None:
    me = ref(meta)
    CHANGES.bump(server_scope(me.namespace, me.name))  # its agent's held long poll re-evaluates


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
def reconcile_server(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    me = ref(meta)
    silent_after = runtime(memo).settings.agent_silent_after
    plan = plan_server(me.namespace, me.name, spec, status, utcnow(), silent_after)
    apply_plan(plan, patch, status, meta)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=CONTROL)
async def server_agent_heartbeat(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Every change of a Server (the broker's heartbeats included): its agent's health and deadline."""
    rt = runtime(memo)
    meta = body.get("metadata") or {}
    if event.get("type") == "DELETED":
        rt.server_health.forget(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        return
    await rt.server_health.observe(dict(body))
