"""The baseline for bench/jit.py: an empty kopf operator watching the same JitAccounts (one no-op
event handler), so its memory is what kopf alone costs for that many objects."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="empty.kopf.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="empty.kopf.dev")


@kopf.on.event("kubepam.io", "v1alpha1", "jitaccounts")
def noop(**_: Any) -> None:
    return None


if __name__ == "__main__":
    asyncio.run(kopf.operator(clusterwide=True, standalone=True))
