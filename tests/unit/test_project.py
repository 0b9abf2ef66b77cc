"""Project rules and the CA ring: created once, never regenerated, rotated with an overlap, retired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubepam.domain.errors import SpecError
from kubepam.domain.project import CAGeneration, parse_project, plan_ca

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_defaults_follow_okta_asa() -> None:
    spec = parse_project({})
    assert spec.limits.default_ttl == timedelta(minutes=3) and spec.limits.max_ttl == timedelta(hours=1)
    assert spec.key_type == "Ed25519" and spec.rotation_generation == 0 and spec.overlap == timedelta(hours=1)
    assert spec.enrollment_enabled


def test_first_ca_is_created_once() -> None:
    spec = parse_project({})
    plan = plan_ca([], spec, T0)
    assert plan.create == 0 and plan.keep == (CAGeneration(0, "Ed25519"),)
    again = plan_ca(list(plan.keep), spec, T0 + timedelta(days=400))
    assert not again.changes  # adopted, never regenerated


def test_rotation_keeps_the_previous_ca_for_the_overlap_then_drops_it() -> None:
    ring = [CAGeneration(0, "Ed25519")]
    spec = parse_project(
        {"certificateAuthority": {"keyType": "ECDSA-P256", "rotation": {"generation": 1, "overlap": "30m"}}}
    )
    plan = plan_ca(ring, spec, T0)
    assert plan.create == 1
    assert plan.keep == (
        CAGeneration(0, "Ed25519", T0 + timedelta(minutes=30)),
        CAGeneration(1, "ECDSA-P256"),
    )
    assert plan.next_change == T0 + timedelta(minutes=30)
    during = plan_ca(list(plan.keep), spec, T0 + timedelta(minutes=29))
    assert not during.changes
    after = plan_ca(list(plan.keep), spec, T0 + timedelta(minutes=30))
    assert after.drop == (0,) and after.keep == (CAGeneration(1, "ECDSA-P256"),) and after.next_change is None


def test_lowering_the_generation_does_not_roll_back() -> None:
    ring = [CAGeneration(2, "Ed25519")]
    assert not plan_ca(
        ring, parse_project({"certificateAuthority": {"rotation": {"generation": 1}}}), T0
    ).changes


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"certificates": {"defaultTTL": "2h", "maxTTL": "1h"}}, "must not exceed maxTTL"),
        ({"certificateAuthority": {"keyType": "DSA"}}, "keyType"),
        ({"certificates": {"maxTTL": "forever"}}, "spec.certificates.maxTTL"),
    ],
)
def test_bad_project_specs(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_project(spec)
