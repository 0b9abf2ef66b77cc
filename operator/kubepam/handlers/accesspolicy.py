"""AccessPolicy handlers: index policies by namespace for decisions, report validity and rule count."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.errors import SpecError
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import plan_policy
from kubepam.domain.policy import Policy, parse_policy
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.status import apply_plan, ref
from kubepam.services.agents import CHANGES, namespace_scope

PLURAL = "accesspolicies"


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def policies_index(meta: kopf.Meta, spec: kopf.Spec, **_: Any) -> dict[str, Policy] | None:
    me = ref(meta)
    try:
        return {me.namespace: parse_policy(me.namespace, me.name, spec)}
    except SpecError:
        return None  # an invalid policy grants nothing; its status says why


@kopf.on.event(GROUP, VERSION, PLURAL, registry=VIEW)
async def policies_changed(meta: kopf.Meta, **_: Any) -> None:
    CHANGES.bump(namespace_scope(ref(meta).namespace))  # the namespace's agents re-evaluate their accounts


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
def reconcile_policy(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    me = ref(meta)
    apply_plan(plan_policy(me.namespace, me.name, spec), patch, status, meta)
