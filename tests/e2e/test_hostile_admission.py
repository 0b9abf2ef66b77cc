"""Hostile input at admission (issue 11) on the real API server: every duration field has a maximum the
API server enforces (no 999999999999999h reaches the operator), a wrongly typed JitAccount field is
answered by schema validation with the field and the type (not by the mutating policy with Go
internals), JSON-pointer claims follow RFC 6901's index grammar, `exists` goes only with operator
exists, and a generic WorkloadConnection names its algorithms. Nothing here needs the operator."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from kubepam.dev.install import NOT_SERVED_YET, wait_for_admission_policies
from tests.e2e.harness import team_namespace

pytestmark = pytest.mark.e2e

NS = "hostile-adm"
HUGE = "999999999999999h"


@pytest.fixture(scope="module")
def ns(plane: ControlPlane) -> str:
    team_namespace(plane, NS)
    wait_for_admission_policies(lambda *a, **kw: plane.kubectl("admin", *a, **kw))  # the MAPs are live
    return NS


def create(
    plane: ControlPlane, who: str, kind: str, spec: dict[str, Any], *, dry_run: bool = True
) -> subprocess.CompletedProcess[str]:
    doc = {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": f"{kind.lower()}-x", "namespace": NS},
        "spec": spec,
    }
    args = ["create", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    deadline = time.monotonic() + 60  # early in a session a new CRD may not be served by its handler yet
    while True:
        result = plane.kubectl(who, *args, input_text=json.dumps(doc), check=False)
        if not any(text in result.stderr for text in NOT_SERVED_YET) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


RULE = {"name": "r", "projects": ["p"]}
PEOPLE = {"users": ["a"]}
JIT = {"project": "p", "owner": "admin", "groups": ["view"], "reason": "why"}
GITLAB = {"provider": "gitlab", "issuer": "https://gitlab.acme.internal", "audiences": ["a"]}
DURATIONS: list[tuple[str, dict[str, Any], str, str]] = [
    # kind, spec with the duration at HUGE, the field path the API server names, the field's maximum
    ("Checkout", {"project": "p", "account": "a", "reason": "r", "duration": HUGE}, "spec.duration", "24h"),
    ("JitAccount", {**JIT, "duration": HUGE}, "spec.duration", "24h"),
    ("SSHCertificateRequest", {"project": "p", "publicKey": "ssh-ed25519 A", "ttl": HUGE}, "spec.ttl", "24h"),
    ("X509CertificateRequest", {"project": "p", "csr": "x", "ttl": HUGE}, "spec.ttl", "24h"),
    ("CheckoutPolicy", {"project": "p", "maxDuration": HUGE}, "spec.maxDuration", "24h"),
    (
        "CheckoutPolicy",
        {"project": "p", "elevation": {"approvalWindow": HUGE}},
        "spec.elevation.approvalWindow",
        "24h",
    ),
    (
        "Project",
        {"certificateAuthority": {"rotation": {"overlap": HUGE}}},
        "spec.certificateAuthority.rotation.overlap",
        "720h",
    ),
    ("Project", {"jit": {"maxDuration": HUGE}}, "spec.jit.maxDuration", "24h"),
    ("Project", {"certificates": {"maxTTL": HUGE}}, "spec.certificates.maxTTL", "24h"),
    (
        "AccessPolicy",
        {"principals": PEOPLE, "rules": [{**RULE, "checkoutDuration": HUGE}]},
        "spec.rules[0].checkoutDuration",
        "24h",
    ),
    (
        "AccessPolicy",
        {"principals": PEOPLE, "rules": [{**RULE, "sshCertificate": {"ttl": HUGE}}]},
        "spec.rules[0].sshCertificate.ttl",
        "24h",
    ),
    (
        "AccessPolicy",
        {"principals": PEOPLE, "rules": [{**RULE, "x509Certificate": {"ttl": HUGE}}]},
        "spec.rules[0].x509Certificate.ttl",
        "24h",
    ),
    ("WorkloadConnection", {**GITLAB, "accessTokenTTL": HUGE}, "spec.accessTokenTTL", "12h"),
]


@pytest.mark.parametrize(
    ("kind", "spec", "field", "maximum"), DURATIONS, ids=[f"{d[0]}:{d[2]}" for d in DURATIONS]
)
def test_every_duration_field_has_a_maximum_the_api_server_enforces(
    plane: ControlPlane, ns: str, kind: str, spec: dict[str, Any], field: str, maximum: str
) -> None:
    refused = create(plane, "admin", kind, spec)
    assert refused.returncode != 0, f"{kind} {field}={HUGE} was accepted"
    assert f"{field}: Invalid value" in refused.stderr and maximum in refused.stderr, refused.stderr
    just_over = json.loads(json.dumps(spec).replace(HUGE, str(int(maximum[:-1]) + 1) + "h"))
    over = create(plane, "admin", kind, just_over)
    assert over.returncode != 0 and f"{field}: Invalid value" in over.stderr, over.stderr


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "duration",
            5,
            'spec.duration: Invalid value: "integer": spec.duration in body must be of type string',
        ),
        ("groups", "view", 'spec.groups: Invalid value: "string": spec.groups in body must be of type array'),
        ("reason", ["a"], 'spec.reason: Invalid value: "array": spec.reason in body must be of type string'),
    ],
)
def test_a_wrongly_typed_jit_account_field_gets_the_schema_error(
    plane: ControlPlane, ns: str, field: str, value: Any, message: str
) -> None:
    spec = {"project": "p", "owner": "alice", "groups": ["view"], "reason": "CHG-1 look", "duration": "1h"}
    refused = create(plane, "alice", "JitAccount", {**spec, field: value}, dry_run=False)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    assert "failed to convert" not in refused.stderr and "valueUnstructured" not in refused.stderr


def test_a_valid_jit_account_is_still_stamped_with_who_changed_it(plane: ControlPlane, ns: str) -> None:
    spec = {"project": "p", "owner": "admin", "groups": ["view"], "reason": "CHG-1 look", "duration": "1h"}
    made = create(plane, "admin", "JitAccount", spec, dry_run=False)
    assert made.returncode == 0, made.stderr
    got = plane.kubectl("admin", "get", "jitaccount", "jitaccount-x", "-n", NS, "-o", "json")
    annotations = json.loads(got.stdout)["metadata"]["annotations"]
    assert annotations["kubepam.io/changed-by"] == "admin"
    assert "system:masters" in annotations["kubepam.io/changed-by-groups"].split(",")
    plane.kubectl("admin", "delete", "jitaccount", "jitaccount-x", "-n", NS, "--wait=false", check=False)


@pytest.mark.parametrize("claim", ["/groups/01", "/groups/²", "/groups/٣", "/a~2b"])
@pytest.mark.parametrize("kind", ["WorkloadRole", "WorkloadConnection"])
def test_claim_pointers_are_checked_when_admitted(
    plane: ControlPlane, ns: str, kind: str, claim: str
) -> None:
    condition = {"claim": claim, "operator": "glob", "value": "ops*"}
    if kind == "WorkloadRole":
        spec: dict[str, Any] = {"match": [{"conditions": [condition]}]}
        path = "spec.match[0].conditions[0].claim"
    else:
        spec = {
            "provider": "generic",
            "issuer": "https://ci.acme.internal",
            "jwksUrl": "https://ci.acme.internal/jwks",
            "algorithms": ["RS256"],
            "audiences": ["a"],
            "claims": [condition],
        }
        path = "spec.claims[0].claim"
    refused = create(plane, "devops", kind, spec)
    assert refused.returncode != 0 and f"{path}: Invalid value" in refused.stderr, refused.stderr
    assert "RFC 6901" in refused.stderr
    fine = json.loads(json.dumps(spec).replace(json.dumps(claim)[1:-1], "/groups/10"))
    accepted = create(plane, "devops", kind, fine)
    assert accepted.returncode == 0, accepted.stderr


def test_exists_false_is_admitted_only_with_operator_exists(plane: ControlPlane, ns: str) -> None:
    absent = {"claim": "act", "operator": "exists", "exists": False}
    assert create(plane, "devops", "WorkloadRole", {"match": [{"conditions": [absent]}]}).returncode == 0
    wrong = {"claim": "act", "operator": "equals", "value": "x", "exists": False}
    refused = create(plane, "devops", "WorkloadRole", {"match": [{"conditions": [wrong]}]})
    assert refused.returncode != 0
    assert "spec.match[0].conditions[0].exists: Invalid value" in refused.stderr
    assert "used only with operator exists" in refused.stderr


def test_a_generic_connection_must_name_its_algorithms(plane: ControlPlane, ns: str) -> None:
    spec = {
        "provider": "generic",
        "issuer": "https://ci.acme.internal",
        "jwksUrl": "https://ci.acme.internal/jwks",
        "audiences": ["a"],
    }
    refused = create(plane, "devops", "WorkloadConnection", spec)
    assert refused.returncode != 0 and "the generic provider needs spec.algorithms" in refused.stderr
    symmetric = create(plane, "devops", "WorkloadConnection", {**spec, "algorithms": ["HS256"]})
    assert symmetric.returncode != 0 and 'spec.algorithms[0]: Unsupported value: "HS256"' in symmetric.stderr
    assert create(plane, "devops", "WorkloadConnection", {**spec, "algorithms": ["ES256"]}).returncode == 0
