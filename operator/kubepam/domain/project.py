"""Project rules: certificate lifetimes, CA key type and rotation, enrollment; and the CA ring.

The CA ring is the list of CA generations a project keeps: the current one signs; the previous one
stays trusted (published) until ``retire_at`` after a rotation, then it is dropped. Pure: the caller
supplies ``now`` and does the key generation and storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from kubepam.domain.durations import duration_field
from kubepam.domain.errors import SpecError
from kubepam.domain.policy import Limits

KEY_TYPES = ("Ed25519", "ECDSA-P256", "RSA-3072")


@dataclass(frozen=True)
class ProjectSpec:
    limits: Limits
    key_type: str
    rotation_generation: int
    overlap: timedelta
    enrollment_enabled: bool
    enrollment_generation: int
    shared_accounts: tuple[Mapping[str, Any], ...]
    jit: Mapping[str, Any]
    uid: str = ""  # the Project's uid, for owner references of what it owns


def parse_project(spec: Mapping[str, Any]) -> ProjectSpec:
    problems: list[str] = []
    ca = spec.get("certificateAuthority") or {}
    rotation = ca.get("rotation") or {}
    certs = spec.get("certificates") or {}
    enrollment = spec.get("enrollment") or {}

    def duration(raw: Any, default: str, path: str) -> timedelta:
        return duration_field(raw, default, path, problems)

    default_ttl = duration(certs.get("defaultTTL"), "3m", "spec.certificates.defaultTTL")
    max_ttl = duration(certs.get("maxTTL"), "1h", "spec.certificates.maxTTL")
    if default_ttl > max_ttl:
        problems.append("spec.certificates.defaultTTL: must not exceed maxTTL")
    key_type = ca.get("keyType", "Ed25519")
    if key_type not in KEY_TYPES:
        problems.append(f"spec.certificateAuthority.keyType: one of {', '.join(KEY_TYPES)}")
    if problems:
        raise SpecError(problems)
    return ProjectSpec(
        limits=Limits(default_ttl, max_ttl),
        key_type=key_type,
        rotation_generation=int(rotation.get("generation", 0)),
        overlap=duration(rotation.get("overlap"), "1h", "spec.certificateAuthority.rotation.overlap"),
        enrollment_enabled=bool(enrollment.get("enabled", True)),
        enrollment_generation=int(enrollment.get("tokenGeneration", 0)),
        shared_accounts=tuple(spec.get("sharedAccounts") or ()),
        jit=spec.get("jit") or {},
    )


@dataclass(frozen=True)
class CAGeneration:
    """One generation of a project's CAs, as far as decisions go (keys are the adapter's business)."""

    generation: int
    key_type: str
    retire_at: datetime | None = None  # set when superseded: trusted until then


@dataclass(frozen=True)
class CAPlan:
    """What to do with the ring: add a generation, and/or drop retired ones; ``keep`` is the result."""

    create: int | None
    drop: tuple[int, ...]
    keep: tuple[CAGeneration, ...]
    next_change: datetime | None

    @property
    def changes(self) -> bool:
        return self.create is not None or bool(self.drop)


def plan_ca(ring: Sequence[CAGeneration], spec: ProjectSpec, now: datetime) -> CAPlan:
    """Create the first CA; rotate when spec asks for a newer generation (the old one stays trusted for
    the overlap); drop generations whose overlap has passed. Never regenerate an existing generation."""
    current = max(ring, key=lambda g: g.generation) if ring else None
    keep = [g for g in ring if g.retire_at is None or g.retire_at > now]
    drop = tuple(g.generation for g in ring if g not in keep)
    create: int | None = None
    if current is None:
        create = spec.rotation_generation
    elif spec.rotation_generation > current.generation:
        create = spec.rotation_generation
        keep = [replace(g, retire_at=g.retire_at or now + spec.overlap) for g in keep]
    if create is not None:
        keep.append(CAGeneration(create, spec.key_type))
    pending = [g.retire_at for g in keep if g.retire_at is not None]
    return CAPlan(
        create, drop, tuple(sorted(keep, key=lambda g: g.generation)), min(pending) if pending else None
    )
