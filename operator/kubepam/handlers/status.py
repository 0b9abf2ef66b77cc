"""Helpers every handler shares: who the object is, and applying a plan's status through kopf's patch
(one place, so every kind reports health the same way)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf

from kubepam.domain.plans import Plan, status_patch


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Ref:
    namespace: str
    name: str
    generation: int


def ref(meta: Mapping[str, Any]) -> Ref:
    return Ref(
        str(meta.get("namespace") or ""), str(meta.get("name") or ""), int(meta.get("generation") or 0)
    )


class StatusObjects(Protocol):
    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...


async def refresh_status(
    objects: StatusObjects,
    plural: str,
    namespace: str,
    name: str,
    plan_of: Callable[[dict[str, Any]], Awaitable[Plan]],
) -> None:
    """Outside kopf's handlers (scheduled work): read the object, plan, and write only what differs."""
    obj = await objects.get(plural, namespace, name)
    if obj is None:
        return
    plan = await plan_of(obj)
    desired = status_patch(plan, obj.get("status"), ref(obj.get("metadata") or {}).generation, utcnow())
    if desired is not None:
        await objects.patch_status(plural, namespace, name, desired)


def apply_plan(
    plan: Plan, patch: kopf.Patch, status: Mapping[str, Any] | None, meta: Mapping[str, Any]
) -> bool:
    """Stage the plan's status in kopf's patch; False when the object already says exactly that."""
    desired = status_patch(plan, status, ref(meta).generation, utcnow())
    if desired is None:
        return False
    patch.status.update(desired)
    return True
