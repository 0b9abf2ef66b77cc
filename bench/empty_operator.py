"""The baseline for the benchmarks: an empty kopf operator watching the same kubepam kinds, so its
memory and speed are what kopf alone costs for that many objects.

    EMPTY_OPERATOR_KINDS=jitaccounts,checkouts   the plurals to watch (default: jitaccounts)
    EMPTY_OPERATOR_HANDLER=event | create        a no-op event handler (writes nothing; bench/jit.py),
                                                 or a no-op create handler: kopf then records it as
                                                 handled in the object's annotations (its diffbase),
                                                 one patch per object, which a watch can see
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import kopf

KINDS = [k for k in os.environ.get("EMPTY_OPERATOR_KINDS", "jitaccounts").split(",") if k]
HANDLER = os.environ.get("EMPTY_OPERATOR_HANDLER", "event")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="empty.kopf.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="empty.kopf.dev")


def noop(**_: Any) -> None:
    return None


for plural in KINDS:
    if HANDLER == "create":
        kopf.on.create("kubepam.io", "v1alpha1", plural, id=f"noop-{plural}")(noop)
    else:
        kopf.on.event("kubepam.io", "v1alpha1", plural, id=f"noop-{plural}")(noop)


if __name__ == "__main__":
    asyncio.run(kopf.operator(clusterwide=True, standalone=True))
