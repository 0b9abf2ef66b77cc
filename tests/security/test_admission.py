"""Security (issue 9, path 1 and the lower findings): the API server itself refuses every change that would
widen access or touch what is not the caller's, whoever asks and however.

Acted out with kubectl only, as people the rest of the suite never uses: mallory (the attacker, a plain
user), victor (her victim, a plain user), april (an approver) and sonia (a security admin). Every attempt
must be refused by the API server with a message that says why, and leave the object as it was:
- a Checkout's spec.groups is immutable; spec.duration and spec.elevation change only by the requester,
  and only while they are still in every group the checkout was made with (not by a security admin,
  who may force a check-in instead); no checkout is born force-checked-in;
- an approver only appends one vote to status.approvals of a checkout, on its open request;
- a certificate request, a Checkout and a JitAccount are changed (metadata included) or deleted only by
  their requester or owner, a security admin or the cluster itself, even where RBAC is generous;
- only security admins choose a JitAccount's spec.accountName, and nobody changes it after creation.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import OperatorProcess, apply, kubectl_json, team_namespace, wait_for

pytestmark = pytest.mark.e2e

NS = "sec-adm"
APPS = "sec-adm-apps"  # where JIT groups and elevations apply (never the project's own namespace)
PROJECT = "sec-ops"
ACCOUNTS = [f"ops_{who}" for who in ("mallory", "victor", "admin", "extra")]
JIT_PROJECT = "sec-jit"
FORGED = "forged by someone who is not the operator"


def obj(kind: str, name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def env(plane: ControlPlane, operator: OperatorProcess) -> Iterator[None]:
    team_namespace(plane, NS)
    team_namespace(plane, APPS)
    apply(
        plane,
        "devops",
        obj(
            "Project",
            PROJECT,
            {"sharedAccounts": [{"name": account, "backend": "kubernetes"} for account in ACCOUNTS]},
        ),
        obj(
            "Project",
            JIT_PROJECT,
            {
                "jit": {
                    "enabled": True,
                    "backend": "kubernetes",
                    "allowedGroups": ["view"],
                    "creators": {"groups": ["kubepam:users"]},
                    "maxDuration": "1h",
                    "namespaces": [APPS],
                }
            },
        ),
        obj(
            "CheckoutPolicy",
            PROJECT,
            {
                "project": PROJECT,
                "maxDuration": "30m",
                "elevation": {
                    "eligibleAccounts": ACCOUNTS,
                    "privilegedGroups": ["view"],
                    "namespaces": [APPS],
                    "approvers": {"groups": ["kubepam:approvers"]},
                },
            },
        ),
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [
                    {
                        "name": "shared",
                        "projects": [PROJECT],
                        "accounts": ["*"],
                        "elevation": {
                            "allowed": True,
                            "requiresApproval": True,
                            "approvers": {"groups": ["kubepam:approvers"]},
                        },
                    }
                ],
            },
        ),
    )
    # RBAC more generous than the shipped personas (users may delete here): the admission policies alone
    # must still keep each person to their own objects.
    apply(
        plane,
        "admin",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "generous-deleters", "namespace": NS},
            "rules": [
                {
                    "apiGroups": ["kubepam.io"],
                    "resources": [
                        "checkouts",
                        "jitaccounts",
                        "sshcertificaterequests",
                        "x509certificaterequests",
                    ],
                    "verbs": ["delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "generous-deleters", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "generous-deleters"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubepam:users"}],
        },
    )
    for project in (PROJECT, JIT_PROJECT):
        assert wait_for(plane, "admin", f"project/{project}", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "admin", f"checkoutpolicy/{PROJECT}", "condition=Ready", NS).returncode == 0
    deadline = (
        time.monotonic() + 20
    )  # the JIT settings ConfigMap is the parameter of kubepam-jitaccount-rules
    while (
        time.monotonic() < deadline
        and plane.kubectl("admin", "get", "configmap", f"{JIT_PROJECT}-jit", "-n", NS, check=False).returncode
    ):
        time.sleep(0.2)
    time.sleep(1)
    yield


def get(plane: ControlPlane, kind: str, name: str) -> dict[str, Any]:
    return dict(kubectl_json(plane, "admin", "get", kind, name, "-n", NS))


def exists(plane: ControlPlane, kind: str, name: str) -> bool:
    return plane.kubectl("admin", "get", kind, name, "-n", NS, check=False).returncode == 0


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode != 0, f"not refused: {result.stdout}"
    assert message in result.stderr, result.stderr


def patch(
    plane: ControlPlane, who: str, kind: str, name: str, body: Any, *extra: str, kind_of_patch: str = "merge"
) -> subprocess.CompletedProcess[str]:
    return plane.kubectl(
        who,
        "patch",
        kind,
        name,
        "-n",
        NS,
        f"--type={kind_of_patch}",
        "-p",
        json.dumps(body),
        *extra,
        check=False,
    )


def checkout(
    plane: ControlPlane, who: str, name: str, account: str, *, as_groups: tuple[str, ...] = (), **spec: Any
) -> subprocess.CompletedProcess[str]:
    body = obj(
        "Checkout",
        name,
        {"project": PROJECT, "account": account, "requester": who, "reason": f"SEC-9 by {who}", **spec},
    )
    if not as_groups:
        return apply(plane, who, body, check=False)
    # the same person with more groups than their token has today (admin impersonates them)
    impersonate = ["--as", who, *(arg for g in as_groups for arg in ("--as-group", g))]
    return plane.kubectl("admin", "create", "-f", "-", *impersonate, input_text=json.dumps(body), check=False)


def test_a_checkouts_groups_cannot_be_changed_after_creation(plane: ControlPlane, env: None) -> None:
    assert checkout(plane, "mallory", "mallory-groups", "ops_mallory").returncode == 0
    before = get(plane, "checkout", "mallory-groups")["spec"]
    assert "kubepam:users" in before["groups"] and "kubepam:security-admins" not in before["groups"]

    forged = [*before["groups"], "kubepam:security-admins"]
    refused(
        patch(plane, "mallory", "checkout", "mallory-groups", {"spec": {"groups": forged}}),
        "spec.groups is immutable",
    )
    # the original attack: forge the groups and ask for elevation in one patch
    refused(
        patch(
            plane,
            "mallory",
            "checkout",
            "mallory-groups",
            {"spec": {"groups": forged, "elevation": {"requested": True}, "duration": "8h"}},
        ),
        "spec.groups is immutable",
    )
    refused(
        patch(
            plane,
            "mallory",
            "checkout",
            "mallory-groups",
            [{"op": "remove", "path": "/spec/groups"}],
            kind_of_patch="json",
        ),
        "spec.groups is immutable",
    )
    # nobody may rewrite them, a security admin included
    refused(
        patch(plane, "sonia", "checkout", "mallory-groups", {"spec": {"groups": ["kubepam:users"]}}),
        "spec.groups is immutable",
    )
    assert get(plane, "checkout", "mallory-groups")["spec"] == before


def test_only_the_requester_extends_or_elevates_a_checkout(plane: ControlPlane, env: None) -> None:
    assert checkout(plane, "mallory", "mallory-extend", "ops_mallory", duration="10m").returncode == 0
    before = get(plane, "checkout", "mallory-extend")["spec"]

    for body in ({"spec": {"duration": "8h"}}, {"spec": {"elevation": {"requested": True}}}):
        refused(
            patch(plane, "sonia", "checkout", "mallory-extend", body),
            "only the requester (mallory) may change spec.duration, spec.elevation, spec.breakGlass, "
            "spec.queue or spec.claim of this checkout; a security admin may force its check-in instead",
        )
        refused(
            patch(plane, "victor", "checkout", "mallory-extend", body),
            "only the requester (mallory) or a security admin may change this checkout",
        )
    assert get(plane, "checkout", "mallory-extend")["spec"] == before

    mine = patch(plane, "mallory", "checkout", "mallory-extend", {"spec": {"duration": "20m"}})
    assert mine.returncode == 0, mine.stderr
    assert get(plane, "checkout", "mallory-extend")["spec"] == {**before, "duration": "20m"}

    forced = patch(plane, "sonia", "checkout", "mallory-extend", {"spec": {"checkin": {"force": True}}})
    assert forced.returncode == 0, forced.stderr  # a security admin may still take it back


def test_a_requester_who_lost_a_group_cannot_extend_or_elevate(plane: ControlPlane, env: None) -> None:
    """Made while mallory was also on call; her token today has kubepam:users only."""
    made = checkout(
        plane, "mallory", "mallory-oncall", "ops_extra", as_groups=("kubepam:users", "sec-adm:oncall")
    )
    assert made.returncode == 0, made.stderr
    before = get(plane, "checkout", "mallory-oncall")["spec"]
    assert before["requester"] == "mallory" and "sec-adm:oncall" in before["groups"]

    for body in ({"spec": {"duration": "25m"}}, {"spec": {"elevation": {"requested": True}}}):
        refused(
            patch(plane, "mallory", "checkout", "mallory-oncall", body),
            "your groups changed since this checkout was created (no longer in sec-adm:oncall): "
            "check out again",
        )
    assert get(plane, "checkout", "mallory-oncall")["spec"] == before
    # what does not widen access is still hers to do
    back = patch(plane, "mallory", "checkout", "mallory-oncall", {"spec": {"checkin": {"requested": True}}})
    assert back.returncode == 0, back.stderr


def test_no_checkout_is_created_force_checked_in(plane: ControlPlane, env: None) -> None:
    for who in ("mallory", "admin"):  # not even a cluster admin
        refused(
            checkout(plane, who, f"{who}-born-forced", f"ops_{who}", checkin={"force": True}),
            "a new checkout cannot be force-checked-in",
        )
        assert not exists(plane, "checkout", f"{who}-born-forced")
    assert checkout(plane, "mallory", "mallory-force", "ops_mallory").returncode == 0
    refused(
        patch(plane, "mallory", "checkout", "mallory-force", {"spec": {"checkin": {"force": True}}}),
        "only kubepam:security-admins may force a check-in",
    )
    assert not (get(plane, "checkout", "mallory-force")["spec"].get("checkin") or {}).get("force")


def test_an_approver_only_appends_votes_to_a_checkouts_status(plane: ControlPlane, env: None) -> None:
    assert checkout(plane, "victor", "victor-status", "ops_victor").returncode == 0
    deadline = time.monotonic() + 30  # let the operator write its status first, so there is one to forge
    while time.monotonic() < deadline and not get(plane, "checkout", "victor-status").get("status"):
        time.sleep(0.2)
    for forged in (
        {"message": FORGED},
        {"observedGeneration": 999},
        {"phase": "CheckedIn"},
        {"holder": "april"},
        {"approvalRequest": {"id": "checkout-9", "state": "Approved"}},
        {"breakGlass": {"used": False}},
        {"approvedDuration": "24h"},
    ):
        refused(
            patch(plane, "april", "checkout", "victor-status", {"status": forged}, "--subresource=status"),
            "people may only append to status.approvals; the rest of a checkout's status is the operator's",
        )
        status = get(plane, "checkout", "victor-status").get("status") or {}
        for key, value in forged.items():
            assert status.get(key) != value, status
    vote = {"request": "checkout-1", "decision": "Approved"}
    refused(
        patch(
            plane,
            "april",
            "checkout",
            "victor-status",
            {"status": {"approvals": [vote]}},
            "--subresource=status",
        ),
        "nothing to approve: no approval was requested",
    )
    assert not (get(plane, "checkout", "victor-status").get("status") or {}).get("approvals")


def test_only_the_requester_changes_or_deletes_a_certificate_request(plane: ControlPlane, env: None) -> None:
    public_key = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "victor")]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    requests = {
        "sshcertificaterequest": obj(
            "SSHCertificateRequest",
            "victor-ssh",
            {"project": PROJECT, "publicKey": public_key, "requester": "x"},
        ),
        "x509certificaterequest": obj(
            "X509CertificateRequest", "victor-x509", {"project": PROJECT, "csr": csr, "requester": "x"}
        ),
    }
    for kind, body in requests.items():
        apply(plane, "victor", body)
        name = body["metadata"]["name"]
        deadline = time.monotonic() + 30  # decided by the operator, so its own metadata is in place
        while time.monotonic() < deadline and not (get(plane, kind, name).get("status") or {}).get("phase"):
            time.sleep(0.2)
        before = get(plane, kind, name)
        message = "only the requester (victor) or a security admin may change this certificate request"
        refused(
            plane.kubectl("mallory", "annotate", kind, name, "-n", NS, "mallory=was-here", check=False),
            message,
        )
        refused(
            plane.kubectl("mallory", "label", kind, name, "-n", NS, "mallory=was-here", check=False), message
        )
        finalizers = [*before["metadata"].get("finalizers", []), "mallory.example/block-deletion"]
        refused(patch(plane, "mallory", kind, name, {"metadata": {"finalizers": finalizers}}), message)
        refused(
            plane.kubectl("mallory", "delete", kind, name, "-n", NS, "--wait=false", check=False),
            "only the requester (victor) or a security admin may delete this certificate request",
        )
        after = get(plane, kind, name)
        assert after["spec"] == before["spec"] and "deletionTimestamp" not in after["metadata"]
        assert "mallory" not in (after["metadata"].get("annotations") or {})
        assert "mallory" not in (after["metadata"].get("labels") or {})
        assert "mallory.example/block-deletion" not in after["metadata"].get("finalizers", [])
        # the requester's own, and a security admin's, changes still go through
        own = plane.kubectl("victor", "annotate", kind, name, "-n", NS, "ticket=SEC-9", check=False)
        assert own.returncode == 0, own.stderr
    gone = plane.kubectl("sonia", "delete", "sshcertificaterequest", "victor-ssh", "-n", NS, check=False)
    assert gone.returncode == 0, gone.stderr
    mine = plane.kubectl("victor", "delete", "x509certificaterequest", "victor-x509", "-n", NS, check=False)
    assert mine.returncode == 0, mine.stderr


def test_only_the_requester_deletes_a_checkout(plane: ControlPlane, env: None) -> None:
    assert checkout(plane, "victor", "victor-keep", "ops_victor").returncode == 0
    before = get(plane, "checkout", "victor-keep")
    refused(
        plane.kubectl("mallory", "delete", "checkout", "victor-keep", "-n", NS, "--wait=false", check=False),
        "only the requester (victor) or a security admin may delete this checkout",
    )
    refused(
        plane.kubectl(
            "mallory", "annotate", "checkout", "victor-keep", "-n", NS, "mallory=was-here", check=False
        ),
        "only the requester (victor) or a security admin may change this checkout",
    )
    after = get(plane, "checkout", "victor-keep")
    assert after["spec"] == before["spec"] and "deletionTimestamp" not in after["metadata"]
    assert "mallory" not in (after["metadata"].get("annotations") or {})


def test_only_security_admins_choose_a_jit_account_name_and_nobody_changes_it(
    plane: ControlPlane, env: None
) -> None:
    spec = {"project": JIT_PROJECT, "groups": ["view"], "reason": "SEC-9 attacker test", "duration": "30m"}
    refused(
        apply(
            plane,
            "mallory",
            obj("JitAccount", "mallory-as-victor", {**spec, "owner": "mallory", "accountName": "victor_jit"}),
            check=False,
        ),
        "only kubepam:security-admins choose spec.accountName; yours is mallory_jit",
    )
    assert not exists(plane, "jitaccount", "mallory-as-victor")

    assert (
        apply(plane, "mallory", obj("JitAccount", "mallory-own", {**spec, "owner": "mallory"})).returncode
        == 0
    )
    before = get(plane, "jitaccount", "mallory-own")["spec"]
    for who in ("mallory", "sonia"):
        refused(
            patch(plane, who, "jitaccount", "mallory-own", {"spec": {"accountName": "victor_jit"}}),
            "spec.accountName is immutable",
        )
    assert get(plane, "jitaccount", "mallory-own")["spec"] == before


def test_only_the_owner_changes_or_deletes_a_jit_account(plane: ControlPlane, env: None) -> None:
    spec = {"project": JIT_PROJECT, "groups": ["view"], "reason": "SEC-9 victor's work", "duration": "30m"}
    assert (
        apply(plane, "victor", obj("JitAccount", "victor-own", {**spec, "owner": "victor"})).returncode == 0
    )
    before = get(plane, "jitaccount", "victor-own")
    message = "only the owner (victor) or a security admin may change this JIT account"
    refused(
        patch(
            plane, "mallory", "jitaccount", "victor-own", {"spec": {"reason": "SEC-9 mallory re-enables it"}}
        ),
        message,
    )
    refused(
        plane.kubectl(
            "mallory", "annotate", "jitaccount", "victor-own", "-n", NS, "mallory=was-here", check=False
        ),
        message,
    )
    refused(
        plane.kubectl("mallory", "delete", "jitaccount", "victor-own", "-n", NS, "--wait=false", check=False),
        "only the owner (victor) or a security admin may delete this JIT account",
    )
    after = get(plane, "jitaccount", "victor-own")
    assert after["spec"] == before["spec"] and "deletionTimestamp" not in after["metadata"]
    assert "mallory" not in (after["metadata"].get("annotations") or {})
