"""Checkout handlers: hand every change to the checkout service, which writes status itself (so the
same steps run from kopf, from the scheduler at deadlines and retries, and after a restart)."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.kinds import GROUP, VERSION
from kubepam.handlers.registries import CONTROL
from kubepam.handlers.runtime import runtime
from kubepam.handlers.status import ref

PLURAL = "checkouts"


@kopf.on.startup(registry=CONTROL)
async def rearm_checkout_deadlines(memo: Any, logger: Any, **_: Any) -> None:
    """Deadlines first, as this replica starts leading (see ObjectReconciler.arm_listed)."""
    logger.info("%d checkout deadlines armed", await runtime(memo).checkouts.arm_listed())


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
async def reconcile_checkout(meta: kopf.Meta, memo: Any, **_: Any) -> None:
    me = ref(meta)
    runtime(memo).checkouts.enqueue(me.namespace, me.name)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=CONTROL)
async def checkout_event(type: str, body: kopf.Body, status: kopf.Status, memo: Any, **_: Any) -> None:
    rt = runtime(memo)
    if type == "DELETED":
        await rt.checkouts.abandoned(dict(body))
        return
    request = status.get("approvalRequest") or {}
    if request.get("state") == "Pending" and any(
        isinstance(vote, dict) and vote.get("request") == request.get("id")
        for vote in status.get("approvals") or []
    ):
        me = ref(body["metadata"])
        rt.checkouts.enqueue(me.namespace, me.name)  # an approver voted (a status patch)
