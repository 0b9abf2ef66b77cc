"""Helpers every handler shares: who the object is, and applying a plan's status through kopf's patch
(one place, so every kind reports health the same way)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


def apply_plan(
    plan: Plan, patch: kopf.Patch, status: Mapping[str, Any] | None, meta: Mapping[str, Any]
) -> bool:
    """Stage the plan's status in kopf's patch; False when the object already says exactly that."""
    desired = status_patch(plan, status, ref(meta).generation, utcnow())
    if desired is None:
        return False
    patch.status.update(desired)
    return True
