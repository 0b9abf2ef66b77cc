"""Server handlers: index servers (project and labels) for policy decisions; validate and report."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import plan_generic
from kubepam.domain.policy import ServerView
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.status import apply_plan, ref

PLURAL = "servers"


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def servers_index(meta: kopf.Meta, spec: kopf.Spec, labels: kopf.Labels, **_: Any) -> dict[Any, ServerView]:
    me = ref(meta)
    return {(me.namespace, me.name): ServerView(me.name, str(spec.get("project", "")), dict(labels))}


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
def reconcile_server(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    me = ref(meta)
    apply_plan(plan_generic("Server", me.namespace, me.name, spec), patch, status, meta)
