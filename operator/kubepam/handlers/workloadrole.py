"""WorkloadRole handlers: index roles by namespace for the broker and report the SSH username."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import plan_role
from kubepam.domain.roles import Role
from kubepam.handlers.directory import role_entry
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.runtime import runtime
from kubepam.handlers.status import apply_plan, ref

PLURAL = "workloadroles"


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def roles_index(meta: kopf.Meta, spec: kopf.Spec, **_: Any) -> dict[str, Role] | None:
    me = ref(meta)
    role = role_entry(me.namespace, me.name, spec)  # None: matches nothing; reconcile_role says why
    return {me.namespace: role} if role is not None else None


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
def reconcile_role(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    me = ref(meta)
    apply_plan(plan_role(me.namespace, me.name, spec), patch, status, meta)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=VIEW)
def role_event(memo: Any, **_: Any) -> None:
    runtime(memo).directory.mark_synced()
