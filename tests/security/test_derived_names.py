"""Security (issue 9, paths 2 and 4, and the examples' layout): names the operator derives belong to it.

Acted out with kubectl as people the rest of the suite never uses (mallory and victor, plain users;
sonia, a security admin), on the real control plane with the operator running:
- no name a person picks for a JitAccount or Checkout reaches a project's CA keys (every derived Secret,
  Role and RoleBinding is named from its owner's uid);
- a JitAccount never adopts, hands out or deletes another person's ServiceAccount, even when a security
  admin gives it the same account name; an object squatting a derived name is refused until removed;
- JIT groups and elevations never apply in the namespace that holds the keys and passwords.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    kubectl_json,
    kubepam_object,
    object_status,
    team_namespace,
    wait_for,
)
from tests.e2e.harness import wait_status as wait_for_status

pytestmark = pytest.mark.e2e

NS = "sec-names"
APPS = "sec-names-apps"  # where JIT groups apply


def obj(kind: str, name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return kubepam_object(kind, name, spec, namespace)


def status(plane: ControlPlane, kind: str, name: str) -> dict[str, Any]:
    return object_status(plane, kind, name, NS)


def wait_status(plane: ControlPlane, kind: str, name: str, fits: Any, timeout: float = 60) -> dict[str, Any]:
    return wait_for_status(plane, kind, name, NS, fits, timeout)


def jit_project(namespaces: list[str]) -> dict[str, Any]:
    return {
        "sharedAccounts": [{"name": "demo_admin", "backend": "kubernetes"}],
        "jit": {
            "enabled": True,
            "backend": "kubernetes",
            "allowedGroups": ["view"],
            "creators": {"groups": ["kubepam:users"]},
            "maxDuration": "1h",
            "namespaces": namespaces,
        },
    }


def jit(owner: str, **extra: Any) -> dict[str, Any]:
    return {
        "project": "jit-hi",
        "owner": owner,
        "groups": ["view"],
        "reason": "SEC-1 attacker test",
        "duration": "30m",
        **extra,
    }


@pytest.fixture(scope="module")
def env(plane: ControlPlane, operator: OperatorProcess) -> Iterator[None]:
    team_namespace(plane, NS)
    team_namespace(plane, APPS)
    apply(
        plane,
        "devops",
        # the exact names of the original findings: JitAccount `hi-ca-keys` wrote Secret `jit-hi-ca-keys`,
        # which was project `jit-hi`'s CA; Checkout `demo-ca-keys` wrote `checkout-demo-ca-keys`.
        obj("Project", "jit-hi", jit_project([APPS])),
        obj(
            "Project", "checkout-demo", {"sharedAccounts": [{"name": "demo_admin", "backend": "kubernetes"}]}
        ),
        obj("CheckoutPolicy", "checkout-demo", {"project": "checkout-demo", "maxDuration": "30m"}),
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "shared", "projects": ["checkout-demo"], "accounts": ["*"]}],
            },
        ),
    )
    for project in ("jit-hi", "checkout-demo"):
        assert wait_for(plane, "admin", f"project/{project}", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "admin", "checkoutpolicy/checkout-demo", "condition=Ready", NS).returncode == 0
    deadline = time.monotonic() + 20  # the JIT settings ConfigMap is the admission policy's parameter
    while (
        time.monotonic() < deadline
        and plane.kubectl("admin", "get", "configmap", "jit-hi-jit", "-n", NS, check=False).returncode
    ):
        time.sleep(0.2)
    time.sleep(1)
    yield


def get(plane: ControlPlane, kind: str, name: str, namespace: str = NS) -> dict[str, Any]:
    return kubectl_json(plane, "admin", "get", kind, name, "-n", namespace)


def exists(plane: ControlPlane, kind: str, name: str, namespace: str = NS) -> bool:
    return plane.kubectl("admin", "get", kind, name, "-n", namespace, check=False).returncode == 0


def gone(plane: ControlPlane, kind: str, name: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while exists(plane, kind, name) and time.monotonic() < deadline:
        time.sleep(0.3)
    return not exists(plane, kind, name)


def test_names_people_choose_never_reach_a_projects_ca_keys(plane: ControlPlane, env: None) -> None:
    ca = {p: status(plane, "project", p)["ca"]["secretName"] for p in ("jit-hi", "checkout-demo")}
    before = {p: get(plane, "secret", name) for p, name in ca.items()}
    for project, name in ca.items():
        uid = get(plane, "project", project)["metadata"]["uid"]
        assert name == f"kubepam-ca-keys-{project}-{uid}"

    apply(plane, "mallory", obj("JitAccount", "hi-ca-keys", jit("mallory")))
    jit_active = wait_status(plane, "jitaccount", "hi-ca-keys", lambda s: s.get("phase") == "Active")
    apply(
        plane,
        "mallory",
        obj(
            "Checkout",
            "demo-ca-keys",
            {"project": "checkout-demo", "account": "demo_admin", "requester": "mallory", "reason": "SEC-2"},
        ),
    )
    co_active = wait_status(plane, "checkout", "demo-ca-keys", lambda s: s.get("phase") == "Active")
    for secret in (jit_active["secretName"], co_active["secretName"]):
        assert secret not in ca.values() and secret.startswith("kubepam-")
        assert plane.kubectl("mallory", "get", "secret", secret, "-n", NS, check=False).returncode == 0
    for name in ca.values():  # the holder reads their own credential, never a CA key
        refused = plane.kubectl("mallory", "get", "secret", name, "-n", NS, check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr

    plane.kubectl(
        "mallory", "patch", "checkout", "demo-ca-keys", "-n", NS, "--type=merge", "-p",
        '{"spec":{"checkin":{"requested":true}}}',
    )  # fmt: skip
    wait_status(plane, "checkout", "demo-ca-keys", lambda s: s.get("phase") == "CheckedIn")
    plane.kubectl("sonia", "delete", "jitaccount", "hi-ca-keys", "-n", NS)
    assert gone(plane, "jitaccount", "hi-ca-keys")
    for project, name in ca.items():  # untouched: same object, same version, same keys
        after = get(plane, "secret", name)
        assert after["metadata"]["uid"] == before[project]["metadata"]["uid"]
        assert after["metadata"]["resourceVersion"] == before[project]["metadata"]["resourceVersion"]
        assert after["data"] == before[project]["data"]
    assert not exists(plane, "secret", jit_active["secretName"])
    assert not exists(plane, "secret", co_active["secretName"])


def test_a_jit_account_never_takes_over_another_persons_account(plane: ControlPlane, env: None) -> None:
    apply(plane, "victor", obj("JitAccount", "victor", jit("victor")))
    victor = wait_status(plane, "jitaccount", "victor", lambda s: s.get("phase") == "Active")
    sa_before = get(plane, "serviceaccount", "victor-jit")
    token = base64.b64decode(get(plane, "secret", victor["secretName"])["data"]["token"]).decode()

    # mallory cannot name victor's account herself: the API server refuses it
    refused = apply(
        plane, "mallory", obj("JitAccount", "takeover", jit("mallory", accountName="victor_jit")), check=False
    )
    assert refused.returncode != 0 and "spec.accountName" in refused.stderr, refused.stderr
    assert not exists(plane, "jitaccount", "takeover")

    # even a security admin who gives mallory that name does not hand her victor's ServiceAccount
    apply(plane, "sonia", obj("JitAccount", "takeover", jit("mallory", accountName="victor_jit")))
    stuck = wait_status(
        plane, "jitaccount", "takeover", lambda s: "refusing to adopt" in (s.get("message") or ""), timeout=30
    )
    assert stuck.get("phase") != "Active" and "ServiceAccount" in stuck["message"], stuck
    mine = [
        s["metadata"]["name"]
        for s in kubectl_json(plane, "admin", "get", "secrets", "-n", NS)["items"]
        if (s["metadata"].get("labels") or {}).get("kubepam.io/owner-name") == "takeover"
    ]
    assert mine == []  # no credential was written for mallory

    # deleting the impostor leaves victor's account, its token and its window alone
    plane.kubectl("sonia", "delete", "jitaccount", "takeover", "-n", NS)
    assert gone(plane, "jitaccount", "takeover")
    sa_after = get(plane, "serviceaccount", "victor-jit")
    assert sa_after["metadata"]["uid"] == sa_before["metadata"]["uid"]
    assert status(plane, "jitaccount", "victor")["phase"] == "Active"
    whoami = plane.kubectl(
        "admin", "auth", "can-i", "list", "pods", "-n", APPS, f"--as=system:serviceaccount:{NS}:victor-jit"
    )
    assert whoami.stdout.strip() == "yes" and token


def test_an_object_squatting_a_derived_name_is_refused_until_removed(plane: ControlPlane, env: None) -> None:
    planted = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "mallory-jit", "namespace": NS},
    }
    apply(plane, "admin", planted)
    planted_uid = get(plane, "serviceaccount", "mallory-jit")["metadata"]["uid"]
    apply(plane, "mallory", obj("JitAccount", "mallory", jit("mallory")))
    refused = wait_status(
        plane, "jitaccount", "mallory", lambda s: "refusing to adopt" in (s.get("message") or ""), timeout=30
    )
    assert refused.get("phase") != "Active"
    assert get(plane, "serviceaccount", "mallory-jit")["metadata"]["uid"] == planted_uid  # left alone
    events = plane.kubectl(
        "admin",
        "get",
        "events.events.k8s.io",
        "-n",
        NS,
        "--field-selector",
        "regarding.name=mallory",
        "-o",
        "json",
    ).stdout
    assert "refusing to adopt" in events
    plane.kubectl("admin", "delete", "serviceaccount", "mallory-jit", "-n", NS)
    active = wait_status(plane, "jitaccount", "mallory", lambda s: s.get("phase") == "Active", timeout=60)
    sa = get(plane, "serviceaccount", "mallory-jit")
    assert sa["metadata"]["uid"] != planted_uid
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubepam"
    assert active["accountName"] == "mallory_jit"
    plane.kubectl("sonia", "delete", "jitaccount", "mallory", "-n", NS)


def test_jit_and_elevation_never_apply_where_the_keys_are(plane: ControlPlane, env: None) -> None:
    apply(plane, "devops", obj("Project", "keys-here", jit_project([APPS, NS])))
    stalled = wait_status(
        plane,
        "project",
        "keys-here",
        lambda s: any(c["type"] == "Stalled" and c["status"] == "True" for c in s.get("conditions") or []),
    )
    assert any(
        f"spec.jit.namespaces must not include {NS}" in c.get("message", "") for c in stalled["conditions"]
    )
    apply(
        plane,
        "devops",
        obj(
            "CheckoutPolicy",
            "keys-here",
            {
                "project": "keys-here",
                "elevation": {
                    "eligibleAccounts": ["demo_admin"],
                    "privilegedGroups": ["edit"],
                    "namespaces": [NS],
                },
            },
        ),
    )
    policy = wait_status(
        plane,
        "checkoutpolicy",
        "keys-here",
        lambda s: any(c["type"] == "Stalled" and c["status"] == "True" for c in s.get("conditions") or []),
    )
    assert any(
        f"spec.elevation.namespaces must not include {NS}" in c.get("message", "")
        for c in policy["conditions"]
    )
    # nothing was bound in the namespace of the keys
    bindings = kubectl_json(plane, "admin", "get", "rolebindings", "-n", NS)["items"]
    assert not [
        b
        for b in bindings
        if b["roleRef"]["kind"] == "ClusterRole" and b["roleRef"]["name"] in ("edit", "view")
    ]
