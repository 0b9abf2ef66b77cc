"""Objects whose spec cannot be parsed (a duration that overflows, stored before the CRDs bounded it):
Stalled with the field path, never a traceback retried every minute, and never dropped from an index
without a status that says why."""

from __future__ import annotations

from typing import Any

import pytest

from kubepam.domain.conditions import Health
from kubepam.domain.plans import plan_checkout_policy, plan_policy
from kubepam.domain.policy import Subject
from kubepam.domain.validation import VALIDATORS
from kubepam.handlers.accesspolicy import policies_index
from kubepam.handlers.checkoutpolicy import checkout_policies_index
from kubepam.handlers.project import projects_index
from kubepam.services.certificates import CertificateIssuer, Denied
from kubepam.services.projects import CAStore
from tests.handlers.broker_world import PolicyDir
from tests.handlers.fakes import Clock, FakeSecrets

HUGE = "999999999999999h"
META = {"name": "x", "namespace": "team-a", "uid": "u"}


@pytest.mark.parametrize(
    "rule",
    [
        {"checkoutDuration": HUGE},
        {"sshCertificate": {"ttl": HUGE}},
        {"x509Certificate": {"ttl": "9" * 40 + "s"}},
    ],
)
def test_an_access_policy_that_cannot_be_parsed_leaves_the_index_and_says_why(rule: dict[str, Any]) -> None:
    spec = {"principals": {"users": ["alice"]}, "rules": [{"name": "r", "projects": ["p"], **rule}]}
    assert policies_index(meta=META, spec=spec) is None  # grants nothing...
    plan = plan_policy("team-a", "x", spec)  # ...and its status says why, naming the field
    assert plan.health is Health.STALLED and plan.reason == "InvalidSpec"
    field = next(iter(rule))
    assert f"spec.rules[0].{field}" in plan.message and "OverflowError" not in plan.message


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"project": "p", "maxDuration": HUGE}, "spec.maxDuration"),
        ({"project": "p", "elevation": {"approvalWindow": HUGE}}, "spec.elevation.approvalWindow"),
        ({"project": "p", "scope": "Some", "accounts": ["a"]}, "spec.scope"),  # only the parser catches this
    ],
)
def test_a_checkout_policy_left_out_of_the_index_is_stalled_with_the_field(
    spec: dict[str, Any], field: str
) -> None:
    assert checkout_policies_index(meta=META, spec=spec) is None
    plan = plan_checkout_policy("team-a", "x", spec)
    assert plan.health is Health.STALLED and field in plan.message


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"jit": {"maxDuration": HUGE}}, "spec.jit.maxDuration"),
        (
            {"certificateAuthority": {"rotation": {"overlap": HUGE}}},
            "spec.certificateAuthority.rotation.overlap",
        ),
        ({"certificates": {"maxTTL": HUGE}}, "spec.certificates.maxTTL"),
    ],
)
def test_a_project_with_a_duration_out_of_range_is_refused_with_the_field(
    spec: dict[str, Any], field: str
) -> None:
    indexed = projects_index(meta=META, spec=spec)  # dropped, or kept with the default in its place...
    assert indexed is None or indexed[("team-a", "x")].overlap.total_seconds() == 3600
    problems = VALIDATORS["Project"]("team-a", "x", spec)  # ...and Stalled with the field either way
    assert any(p.startswith(field) for p in problems), problems


@pytest.mark.parametrize(
    "kind", ["Checkout", "JitAccount", "SSHCertificateRequest", "X509CertificateRequest"]
)
def test_validators_report_overflowing_durations(kind: str) -> None:
    field = "ttl" if "Certificate" in kind else "duration"
    problems = VALIDATORS[kind]("team-a", "x", {field: HUGE})
    assert any(p.startswith(f"spec.{field}: ") and "87600h" in p for p in problems), problems


async def test_a_certificate_request_with_an_overflowing_ttl_is_denied() -> None:
    clock = Clock()
    issuer = CertificateIssuer(PolicyDir(), CAStore(FakeSecrets(), FakeSecrets(), clock), clock)  # type: ignore[arg-type]
    spec = {"project": "web", "server": "web-1", "publicKey": "ssh-ed25519 AAAA", "ttl": HUGE}
    result = issuer.ssh("team-a", "req", spec, Subject("alice", frozenset()))
    assert (
        isinstance(result, Denied) and result.reason.startswith("spec.ttl: ") and not result.missing_reference
    )
