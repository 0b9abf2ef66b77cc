"""CheckoutPolicy handlers: index policies by (namespace, project) for checkouts; validate and report."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.checkout import CheckoutPolicySpec, parse_checkout_policy
from kubepam.domain.errors import SpecError
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import plan_checkout_policy
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.status import apply_plan, ref

PLURAL = "checkoutpolicies"


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def checkout_policies_index(
    meta: kopf.Meta, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], tuple[str, CheckoutPolicySpec]] | None:
    me = ref(meta)
    try:
        policy = parse_checkout_policy(spec)
    except SpecError:
        return None  # grants nothing; reconcile_checkout_policy's status (plan_checkout_policy) says why
    return {(me.namespace, policy.project): (me.name, policy)}


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
def reconcile_checkout_policy(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    me = ref(meta)
    apply_plan(plan_checkout_policy(me.namespace, me.name, spec), patch, status, meta)
