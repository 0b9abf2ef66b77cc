"""`kubepam plan`'s operator section: what the operator creates, updates or lets go for a change, and
which live checkouts and JIT accounts keep their access after a narrowing change (and until when)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepam import plan

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
UNTIL = "2026-11-22T13:00:00Z"
KEYS = "Secret team-a/kubepam-ca-keys-payments-uid-payments"
KEEPS = (
    f"= Checkout team-a/alice-admin: alice keeps payments_admin until {UNTIL}; "
    "the change applies to new checkouts (a security admin ends it now with spec.checkin.force)"
)


def live() -> list[dict[str, Any]]:
    """The examples as the cluster holds them (with uids)."""
    docs = [
        {**doc, "metadata": {**doc["metadata"], "uid": f"uid-{doc['metadata']['name']}"}}
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") in plan.KINDS
    ]
    return docs


def changed(kind: str, edit: Any) -> list[dict[str, Any]]:
    """The live objects with ``edit`` applied to the spec of the one of ``kind`` (a file's version)."""
    out = []
    for doc in copy.deepcopy(live()):
        if doc["kind"] == kind:
            doc = {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k != "uid"}}
            edit(doc["spec"])
            out.append(doc)
    return out


def request(kind: str, name: str, phase: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}"},
        "spec": {"project": "payments", **spec},
        "status": {"phase": phase, "expiresAt": UNTIL, "accountName": f"{name}_jit"},
    }


CHECKOUT = request("Checkout", "alice-admin", "Active", account="payments_admin", requester="alice")
JIT = request("JitAccount", "alice", "Active", owner="alice", groups=["edit"])
OLD_JIT = request("JitAccount", "bob", "Disabled", owner="bob", groups=["view"])


def rotate(spec: dict[str, Any]) -> None:
    spec["certificateAuthority"]["rotation"] = {"generation": 2, "overlap": "24h"}


def key_type(spec: dict[str, Any]) -> None:
    spec["certificateAuthority"]["keyType"] = "ECDSA-P256"


def shorter_jit(spec: dict[str, Any]) -> None:
    spec["jit"]["maxDuration"] = "1h"


def shorter_checkout(spec: dict[str, Any]) -> None:
    spec["rules"][0]["checkoutDuration"] = "10m"


def longer_checkout(spec: dict[str, Any]) -> None:
    spec["rules"][0]["checkoutDuration"] = "2h"


def drop_account(spec: dict[str, Any]) -> None:
    spec["sharedAccounts"] = []


@pytest.mark.parametrize(
    ("kind", "edit", "expected"),
    [
        (
            "Project",
            rotate,
            [
                f"~ {KEYS}: CA rotation: a new Ed25519 generation 2; the current one stays trusted for 24h",
                "~ ConfigMap team-a/payments-ca: publishes the old and new CA during the overlap",
            ],
        ),
        (
            "Project",
            key_type,
            [
                f"~ {KEYS}: no change yet: keyType Ed25519 -> ECDSA-P256 takes effect at the next rotation "
                "(raise certificateAuthority.rotation.generation)",
            ],
        ),
        (
            "Project",
            shorter_jit,
            [
                "~ ConfigMap team-a/payments-jit: JIT settings: new JIT requests are judged by them",
                f"= JitAccount team-a/alice: alice_jit keeps edit until {UNTIL}; the change applies to the "
                "next window (a security admin ends it now by deleting it)",
            ],
        ),
        (
            "AccessPolicy",
            shorter_checkout,
            [KEEPS],
        ),
        ("AccessPolicy", longer_checkout, []),  # widening: nobody's live access is left behind
        (
            "Project",
            drop_account,
            [KEEPS],
        ),
    ],
    ids=[
        "ca-rotation",
        "key-type-without-rotation",
        "jit-shorter",
        "checkout-shorter",
        "checkout-longer",
        "drop-account",
    ],
)
def test_each_change_lists_what_the_operator_does(kind: str, edit: Any, expected: list[str]) -> None:
    result = plan.plan(changed(kind, edit), live(), requests=[CHECKOUT, JIT, OLD_JIT])
    assert [e.line() for e in result.effects] == expected
    assert result.code(fail_on_widening=False) == plan.CHANGES


def test_a_new_project_creates_its_derived_objects_and_a_deleted_one_lets_them_go() -> None:
    created = plan.plan(changed("Project", lambda spec: None), None)
    assert [e.line() for e in created.effects] == [
        "+ Secret team-a/kubepam-ca-keys-payments-<uid>: CA key ring: a new Ed25519 CA",
        "+ ConfigMap team-a/payments-ca: the CA public keys servers trust",
        "+ ConfigMap team-a/payments-jit: JIT settings, read by the JitAccount admission policy",
        "+ Secret team-a/kubepam-enrollment-payments-<uid>: the server enrollment token",
    ]
    others = [d for d in live() if d["kind"] != "Project"]
    deleted = plan.plan(others, live(), prune=True, requests=[CHECKOUT, JIT])
    lines = [e.line() for e in deleted.effects]
    assert f"- {KEYS}: CA key ring, garbage-collected with Project payments" in lines
    assert "- ConfigMap team-a/payments-jit: garbage-collected with Project payments" in lines
    assert any(line.startswith("= Checkout team-a/alice-admin: alice keeps payments_admin") for line in lines)
    assert any(line.startswith("= JitAccount team-a/alice: alice_jit keeps edit") for line in lines)


def test_no_change_no_effect_and_the_json_form_carries_them() -> None:
    same = plan.plan(changed("Project", lambda spec: None), live(), requests=[CHECKOUT, JIT])
    assert same.effects == [] and same.code(fail_on_widening=False) == plan.NO_CHANGE
    import json

    rotated = json.loads(plan.render(plan.plan(changed("Project", rotate), live()), "json"))
    assert rotated["operator"][0]["change"] == "~" and rotated["operator"][0]["kind"] == "Secret"
    assert "The operator" in plan.render(plan.plan(changed("Project", rotate), live()), "markdown")
