"""The admission policies and CRD rules that guard fields granting access, read from the YAML itself so
a field added later cannot slip past them (issue 9). Their behaviour is tested on the real API server in
tests/security/test_admission.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "manifests" / "40-admission-policies.yaml"


def _policy(name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all(POLICIES.read_text()):
        if doc and doc["kind"] == "ValidatingAdmissionPolicy" and doc["metadata"]["name"] == name:
            return dict(doc)
    raise AssertionError(f"no ValidatingAdmissionPolicy {name}")


def _crd_version(kind_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / kind_file).read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_people_may_only_append_votes_to_a_checkouts_status() -> None:
    status = _crd_version("checkout.yaml")["properties"]["status"]["properties"]
    (rule,) = [
        v
        for v in _policy("kubepam-checkout-approval")["spec"]["validations"]
        if "people may only append to status.approvals" in v.get("message", "")
    ]
    expression = _squash(rule["expression"])
    compared = set(re.findall(r"object\.\?status\.\?(\w+) == oldObject\.\?status\.\?\1\b", expression))
    assert "approvals" in status and "approvals" not in compared
    assert compared == set(status) - {"approvals"}, f"not compared: {set(status) - {'approvals'} - compared}"


@pytest.mark.parametrize(
    ("kind_file", "fields"),
    [
        ("checkout.yaml", ["project", "account", "requester", "groups", "workloadRole"]),
        ("jitaccount.yaml", ["owner", "project", "accountName"]),
        ("sshcertificaterequest.yaml", ["*"]),
        ("x509certificaterequest.yaml", ["*"]),
    ],
)
def test_fields_that_grant_access_are_immutable(kind_file: str, fields: list[str]) -> None:
    rules = [
        _squash(r["rule"]) for r in _crd_version(kind_file)["properties"]["spec"]["x-kubernetes-validations"]
    ]
    for field in fields:
        if field == "*":
            assert "self == oldSelf" in rules
        else:
            assert any(
                f"self.{field} == oldSelf.{field}" in r or f"self.?{field} == oldSelf.?{field}" in r
                for r in rules
            ), f"{kind_file}: spec.{field} is not immutable"


@pytest.mark.parametrize(
    ("policy", "resources", "operations"),
    [
        ("kubepam-checkout-changes", {"checkouts"}, {"CREATE", "UPDATE", "DELETE"}),
        ("kubepam-jitaccount-owner", {"jitaccounts"}, {"CREATE", "UPDATE", "DELETE"}),
        (
            "kubepam-certificaterequest-owner",
            {"sshcertificaterequests", "x509certificaterequests"},
            {"UPDATE", "DELETE"},
        ),
    ],
)
def test_who_may_change_rules_have_no_parameter_and_always_deny(
    policy: str, resources: set[str], operations: set[str]
) -> None:
    """A policy with a paramKind is skipped where no parameter matches: these must hold everywhere."""
    spec = _policy(policy)["spec"]
    assert "paramKind" not in spec and spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == resources and set(rule["operations"]) == operations
    bindings = [
        d
        for d in yaml.safe_load_all(POLICIES.read_text())
        if d and d["kind"] == "ValidatingAdmissionPolicyBinding" and d["spec"]["policyName"] == policy
    ]
    assert [b["spec"]["validationActions"] for b in bindings] == [["Deny"]]
    assert "paramRef" not in bindings[0]["spec"]


def test_every_validating_policy_fails_closed_and_is_bound_to_deny() -> None:
    docs = [d for d in yaml.safe_load_all(POLICIES.read_text()) if d]
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {d["spec"]["policyName"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert set(policies) == set(bindings)
    for name, policy in policies.items():
        assert policy["spec"]["failurePolicy"] == "Fail", name
        assert bindings[name]["spec"]["validationActions"] == ["Deny"], name
