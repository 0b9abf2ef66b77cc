"""JitAccount handlers: every change goes to the JIT service (which writes status itself, so deadlines
and retries run the same steps); deletion takes the account out of its backend (kopf finalizer)."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.kinds import GROUP, VERSION
from kubepam.handlers.registries import CONTROL
from kubepam.handlers.runtime import runtime
from kubepam.handlers.status import ref

PLURAL = "jitaccounts"


@kopf.on.startup(registry=CONTROL)
async def rearm_jit_deadlines(memo: Any, logger: Any, **_: Any) -> None:
    """Deadlines first, as this replica starts leading (see ObjectReconciler.arm_listed)."""
    logger.info("%d JIT account deadlines armed", await runtime(memo).jit.arm_listed())


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
async def resume_jit(body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime(memo).jit.resume(body)


@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
async def reconcile_jit(meta: kopf.Meta, memo: Any, **_: Any) -> None:
    me = ref(meta)
    runtime(memo).jit.enqueue(me.namespace, me.name)


@kopf.on.delete(GROUP, VERSION, PLURAL, registry=CONTROL)
async def remove_jit(body: kopf.Body, memo: Any, **_: Any) -> None:
    from kubepam.adapters import postgres
    from kubepam.adapters.kube import KubeError

    try:
        await runtime(memo).jit.remove(dict(body))
    except (postgres.BackendError, KubeError) as exc:
        raise kopf.TemporaryError(f"cannot remove the account yet: {exc}", delay=10) from None
