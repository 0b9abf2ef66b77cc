"""Offline CEL (kubepam.cel): every rule kubepam ships compiles in cel-python, and the admission model
behaves as the API server's does on create (defaults, transition rules, params, bindings). Agreement
with the real API server on a table of objects is tests/e2e/test_validate_cel.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepam.cel import (
    Admission,
    Resource,
    Unsupported,
    UserInfo,
    apply_defaults,
    crd_rule_violations,
    program,
)
from kubepam.cli import main
from kubepam.offline import load_admission, load_crds

ROOT = Path(__file__).resolve().parents[2]
POLICIES = [
    d for d in yaml.safe_load_all((ROOT / "manifests" / "40-admission-policies.yaml").read_text()) if d
]
ALICE = UserInfo("alice", ("kubepam:users",))
JIT = Resource("kubepam.io", "v1alpha1", "JitAccount", "jitaccounts")


def rules(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for rule in schema.get("x-kubernetes-validations") or ():
            yield str(rule["rule"])
        for value in schema.values():
            yield from rules(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from rules(value)


def create_expressions(policy: dict[str, Any]) -> Iterator[str]:
    spec = policy["spec"]
    for item in spec.get("variables") or ():
        yield item["expression"]
    for item in spec.get("matchConditions") or ():
        yield item["expression"]
    for item in spec.get("validations") or ():
        yield item["expression"]
        if "messageExpression" in item:
            yield item["messageExpression"]
    for item in spec.get("mutations") or ():
        yield item["jsonPatch"]["expression"]


def matches_create(policy: dict[str, Any]) -> bool:
    return any("CREATE" in r["operations"] for r in policy["spec"]["matchConstraints"]["resourceRules"])


@pytest.mark.parametrize("kind", sorted(load_crds(ROOT / "crds")))
def test_every_crd_rule_compiles_offline(kind: str) -> None:
    for expression in rules(dict(load_crds(ROOT / "crds")[kind].schema)):
        program(expression)  # raises CELParseError on syntax cel-python lacks


@pytest.mark.parametrize(
    "policy",
    [p for p in POLICIES if p["kind"].endswith("AdmissionPolicy") and matches_create(p)],
    ids=lambda p: p["metadata"]["name"],
)
def test_every_expression_a_create_reaches_compiles_offline(policy: dict[str, Any]) -> None:
    for expression in create_expressions(policy):
        program(expression)


def jit(**spec: Any) -> dict[str, Any]:
    base = {"project": "p", "owner": "alice", "groups": ["view"], "reason": "why", "duration": "1h"}
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "JitAccount",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": {**base, **spec},
    }


def params(enabled: str = "true", max_duration: str = "2h") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "p-jit", "namespace": "ns", "labels": {"kubepam.io/jit-settings": "true"}},
        "data": {
            "project": "p",
            "enabled": enabled,
            "allowedGroups": "view",
            "creators": "kubepam:users",
            "maxDuration": max_duration,
        },
    }


def test_transition_rules_are_skipped_on_create_and_the_others_run() -> None:
    schema = load_crds(ROOT / "crds")["JitAccount"].schema
    assert crd_rule_violations(schema, jit()) == []
    (long,) = crd_rule_violations(schema, jit(owner="averyveryverylongname"))
    assert long.where == "spec" and "at most 20 characters" in long.message


def test_defaults_fill_absent_fields_only() -> None:
    schema = load_crds(ROOT / "crds")["Checkout"].schema
    doc = {"spec": {"checkin": {"requested": True}}}
    assert apply_defaults(schema, doc)["spec"]["checkin"] == {"requested": True, "force": False}
    assert doc == {"spec": {"checkin": {"requested": True}}}  # the argument is not changed


@pytest.mark.parametrize(
    ("given", "duration", "refused"),
    [
        ([params()], "1h", []),
        ([params()], "3h", ["spec.duration 3h exceeds the maximum of project p (2h)"]),
        ([params(enabled="false")], "1h", ["project p does not allow JIT accounts"]),
        ([], "9h", []),  # no settings published: the binding says Allow, as the API server does
        ([{**params(), "metadata": {**params()["metadata"], "namespace": "other"}}], "9h", []),
    ],
    ids=["within", "over-maximum", "disabled", "no-params-allow", "params-elsewhere"],
)
def test_params_are_the_bindings_selection_in_the_objects_namespace(
    given: list[dict[str, Any]], duration: str, refused: list[str]
) -> None:
    found = load_admission(ROOT / "manifests" / "40-admission-policies.yaml").validate_create(
        jit(duration=duration), JIT, ALICE, given
    )
    assert [v.message.split("denied request: ", 1)[1] for v in found] == refused


def test_an_unbound_policy_is_not_enforced_and_deny_without_params_refuses() -> None:
    policies = copy.deepcopy(POLICIES)
    unbound = Admission(p for p in policies if p["metadata"]["name"] != "kubepam-jitaccount-owner")
    assert unbound.validate_create(jit(owner="bob"), JIT, ALICE, [params()]) == []
    for doc in policies:
        if doc["kind"] == "ValidatingAdmissionPolicyBinding" and "paramRef" in doc["spec"]:
            doc["spec"]["paramRef"]["parameterNotFoundAction"] = "Deny"
    (denied,) = Admission(policies).validate_create(jit(), JIT, ALICE, [])
    assert "no params found for policy binding with `Deny` parameterNotFoundAction" in denied.message


def test_what_is_not_modelled_is_refused_not_guessed() -> None:
    policies = copy.deepcopy(POLICIES)
    for doc in policies:
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"team": "a"}}}
            break
    with pytest.raises(Unsupported, match="matchResources is not modelled offline"):
        Admission(policies)


def test_mutation_stamps_the_requester_before_validation() -> None:
    admission = load_admission(ROOT / "manifests" / "40-admission-policies.yaml")
    checkout = Resource("kubepam.io", "v1alpha1", "Checkout", "checkouts")
    doc = {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"requester": "bob", "account": "a"}}
    mutated, refused = admission.mutate_create(doc, checkout, ALICE)
    assert refused == []
    assert mutated["spec"]["requester"] == "alice"
    assert mutated["spec"]["groups"] == ["kubepam:users", "system:authenticated"]
    assert admission.validate_create(mutated, checkout, ALICE, []) == []


def test_validate_as_a_user_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "jit": {
                "enabled": True,
                "allowedGroups": ["view"],
                "creators": {"groups": ["kubepam:users"]},
                "maxDuration": "2h",
                "namespaces": ["apps"],
            }
        },
    }
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all([project, jit(duration="3h")]))
    assert main(["validate", "-f", str(tmp_path), "--as", "alice", "--as-group", "kubepam:users"]) == 1
    out = capsys.readouterr().out
    assert "JitAccount ns/j: INVALID" in out
    assert "denied request: spec.duration 3h exceeds the maximum of project p (2h)" in out
    assert "Project ns/p: valid" in out
    assert main(["validate", "-f", str(tmp_path), "--as-group", "kubepam:users"]) == 1
    assert "--as-group needs --as" in capsys.readouterr().err


def test_malformed_documents_get_errors_not_a_traceback(tmp_path: Path) -> None:
    api = "kubepam.io/v1alpha1"
    docs = [
        {
            "apiVersion": api,
            "kind": "Project",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"jit": "yes"},
        },
        {
            "apiVersion": api,
            "kind": "Project",
            "metadata": {"name": "q"},
            "spec": {"jit": {"creators": ["x"]}},
        },
        {"apiVersion": api, "kind": "Checkout", "metadata": {"name": "c"}, "spec": "everything"},
        {"apiVersion": api, "kind": "JitAccount", "metadata": "j", "spec": {}},
        jit(groups="view", duration=5),
    ]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump_all(docs))
    from kubepam.offline import check

    findings = check([tmp_path])
    assert len(findings) == 5 and all(f.errors for f in findings), findings
