"""Who may write a workload requester (``workload:...``) or spec.workloadRole on a Checkout: the operator
alone (its broker's workload checkouts), evaluated offline with the admission policies as shipped. The
same rules on the real API server: tests/e2e/test_workload_checkouts.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubepam.cel import Admission, Resource, UserInfo
from kubepam.offline import load_admission

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = Resource("kubepam.io", "v1alpha1", "Checkout", "checkouts")
SSH = Resource("kubepam.io", "v1alpha1", "SSHCertificateRequest", "sshcertificaterequests")
ALICE = UserInfo("alice", ("kubepam:users",))
OPERATOR = UserInfo("system:serviceaccount:kubepam-system:kubepam-operator", ("system:serviceaccounts",))
JOB = "workload:team-a/ci:repo:acme/payments:ref:refs/heads/main"


@pytest.fixture(scope="module")
def admission() -> Admission:
    return load_admission(ROOT / "manifests" / "40-admission-policies.yaml")


def checkout(**spec: Any) -> dict[str, Any]:
    base = {"project": "p", "account": "a", "reason": "r", "requester": JOB}
    return {"metadata": {"name": "c", "namespace": "team-a"}, "spec": {**base, **spec}}


def create(
    admission: Admission, obj: dict[str, Any], user: UserInfo, resource: Resource = CHECKOUT
) -> tuple[dict[str, Any], list[str]]:
    mutated, refused = admission.mutate_create(obj, resource, user)
    return mutated, [str(v) for v in refused + admission.validate_create(mutated, resource, user, [])]


def test_the_operator_creates_a_workload_checkout_as_written(admission: Admission) -> None:
    stored, refused = create(admission, checkout(workloadRole="deployer"), OPERATOR)
    assert refused == []
    assert stored["spec"]["requester"] == JOB and "groups" not in stored["spec"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"workloadRole": "deployer", "groups": ["kubepam:users"]},
            "a workload's checkout carries no spec.groups",
        ),
        ({}, "a workload's checkout names its spec.workloadRole"),
    ],
)
def test_the_operators_workload_checkout_has_a_role_and_no_groups(
    admission: Admission, spec: dict[str, Any], message: str
) -> None:
    _, refused = create(admission, checkout(**spec), OPERATOR)
    assert any(message in r for r in refused), refused


def test_a_person_sending_a_workload_requester_gets_their_own_name_stamped(admission: Admission) -> None:
    stored, refused = create(admission, checkout(), ALICE)
    assert refused == [] and stored["spec"]["requester"] == "alice"


def test_a_person_never_sets_spec_workload_role(admission: Admission) -> None:
    _, refused = create(admission, checkout(requester="alice", workloadRole="deployer"), ALICE)
    assert any("spec.workloadRole is set only by the kubepam operator" in r for r in refused), refused


def test_a_user_named_like_a_workload_is_refused(admission: Admission) -> None:
    """The stamp writes the caller's own name; a name starting with workload: is the operator's to write."""
    impostor = UserInfo(JOB, ("kubepam:users",))
    stored, refused = create(admission, checkout(requester="x"), impostor)
    assert stored["spec"]["requester"] == JOB
    assert any(
        "a requester starting with workload: is written only by the kubepam operator" in r for r in refused
    )


@pytest.mark.parametrize("resource", [CHECKOUT, SSH])
def test_the_operator_is_stamped_as_anyone_else_outside_workload_checkouts(
    admission: Admission, resource: Resource
) -> None:
    obj = checkout(requester="alice") if resource is CHECKOUT else checkout()
    stored, _ = create(admission, obj, OPERATOR, resource)
    assert stored["spec"]["requester"] == OPERATOR.username
