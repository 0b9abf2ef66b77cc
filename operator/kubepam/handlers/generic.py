"""Registration of the validate-and-report reconcile shared by kinds whose behaviour is only
validation so far (the planner decides Ready or Stalled; the status says why)."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.kinds import GROUP, PLURALS, VERSION
from kubepam.domain.plans import plan_generic
from kubepam.handlers.status import apply_plan, ref


def register_validation(kind: str) -> None:
    plural = PLURALS[kind]

    @kopf.on.resume(GROUP, VERSION, plural, id="validate")
    @kopf.on.create(GROUP, VERSION, plural, id="validate")
    @kopf.on.update(GROUP, VERSION, plural, field="spec", id="validate")
    def reconcile(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
        me = ref(meta)
        apply_plan(plan_generic(kind, me.namespace, me.name, spec), patch, status, meta)
