"""Workload checkouts on the real control plane: a CI job exchanges its OIDC token, checks a shared
account out through the broker with its access token (the password it gets is the account's), a second
checkout is refused naming the holder, DELETE checks in (and rotates, as the CheckoutPolicy says), and
once a security admin demotes the connection the same token is refused. The API server keeps people
from writing a workload requester or spec.workloadRole."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from kubepam.dev.cluster import ControlPlane
from kubepam.domain.ownership import derived_name, qualified
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    exchange_until,
    kubectl_json,
    kubepam_object,
    post,
    promote,
    team_namespace,
    wait_for,
    wait_status,
)
from tests.servers import LocalHTTP
from tests.tokens import AUDIENCE, Issuer
from tests.tokens import ISSUERS as TOKEN_ISSUERS

NS = "wlcheckout"
ACCOUNT = "ci_shared"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(TOKEN_ISSUERS["github"], alg="RS256")


@pytest.fixture(scope="module")
def world(plane: ControlPlane, operator: OperatorProcess, issuer: Issuer) -> Iterator[str]:
    """A promoted GitHub connection, the role `deployer`, and a kubernetes-backend shared account that an
    AccessPolicy grants that role; yields the job's OIDC token."""
    with LocalHTTP() as jwks:
        jwks.json("/jwks", issuer.jwks)
        team_namespace(plane, NS)
        apply(
            plane,
            "devops",
            kubepam_object(
                "WorkloadConnection",
                "ci",
                {
                    "provider": "github",
                    "audiences": [AUDIENCE],
                    "claims": [{"claim": "repository", "operator": "equals", "value": "acme/payments"}],
                    "jwksUrl": f"{jwks.url}/jwks",
                    "accessTokenTTL": "5m",
                },
                NS,
            ),
            kubepam_object(
                "WorkloadRole",
                "deployer",
                {
                    "connections": ["ci"],
                    "match": [
                        {
                            "conditions": [
                                {"claim": "environment", "operator": "equals", "value": "production"}
                            ]
                        }
                    ],
                },
                NS,
            ),
            kubepam_object(
                "Project", "ops", {"sharedAccounts": [{"name": ACCOUNT, "backend": "kubernetes"}]}, NS
            ),
            kubepam_object(
                "CheckoutPolicy",
                "ops",
                {"project": "ops", "maxDuration": "30m", "rotation": {"onUserCheckin": True}},
                NS,
            ),
            kubepam_object(
                "AccessPolicy",
                "jobs",
                {
                    "principals": {"workloadRoles": ["deployer"]},
                    "rules": [{"name": "shared", "projects": ["ops"], "accounts": [ACCOUNT]}],
                },
                NS,
            ),
        )
        for what in ("workloadconnection/ci", "project/ops", "checkoutpolicy/ops", "accesspolicy/jobs"):
            assert wait_for(plane, "devops", what, "condition=Ready", NS).returncode == 0, what
        assert promote(plane, "secadmin", NS, "ci").returncode == 0
        yield issuer.mint("github")


def call(op: OperatorProcess, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(op.url + path, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def account_password(plane: ControlPlane) -> str:
    uid = kubectl_json(plane, "admin", "get", "project", "ops", "-n", NS)["metadata"]["uid"]
    name = qualified(derived_name("account", "ops", uid), ACCOUNT)
    data = kubectl_json(plane, "admin", "get", "secret", name, "-n", NS)["data"]
    return base64.b64decode(data["password"]).decode()


def body(**overrides: Any) -> dict[str, Any]:
    return {"role": "deployer", "project": "ops", "account": ACCOUNT, "reason": "deploy #42", **overrides}


def test_a_job_checks_out_and_in_with_its_access_token_until_its_connection_is_demoted(
    plane: ControlPlane, operator: OperatorProcess, world: str
) -> None:
    access = exchange_until(operator, NS, "ci", world, 200)["access_token"]
    sub = jwt.decode(access, options={"verify_signature": False})["sub"]
    assert sub.startswith(f"workload:{NS}/ci:")

    code, answer = post(operator.url + "/v1/checkouts", body=body(duration="10m"), bearer=access)
    assert code == 201, answer
    name = answer["checkout"]
    password = answer["credential"]["password"]
    assert answer["credential"]["username"] == ACCOUNT and password == account_password(plane)

    stored = kubectl_json(plane, "admin", "get", "checkout", name, "-n", NS)
    assert stored["spec"]["requester"] == sub and stored["spec"]["workloadRole"] == "deployer"
    assert "groups" not in stored["spec"]
    assert stored["status"]["phase"] == "Active" and stored["status"]["holder"] == sub
    secret = stored["status"]["secretName"]
    no_role = plane.kubectl("admin", "get", "rolebinding", secret, "-n", NS, check=False)
    assert no_role.returncode != 0  # nobody may read the credential Secret: the job got it once
    assert plane.kubectl("alice", "get", "secret", secret, "-n", NS, check=False).returncode != 0

    code, again = post(operator.url + f"/v1/checkouts/{NS}/{name}/credential", bearer=access)
    assert code == 403 and "returned once" in again["error_description"], again

    code, second = post(operator.url + "/v1/checkouts", body=body(), bearer=access)
    assert code == 403 and second["error"] == "access_denied", second
    assert f"account {ACCOUNT} is checked out by {sub} until" in second["error_description"]

    code, checked = call(operator, "DELETE", f"/v1/checkouts/{NS}/{name}", access)
    assert code == 202 and checked["checkinRequested"] is True, checked
    done = wait_status(plane, "checkout", name, NS, lambda s: s.get("phase") == "CheckedIn")
    assert done["checkinReason"] == "User" and done["rotation"]["completedAt"]
    assert account_password(plane) != password  # rotated at check-in, as the CheckoutPolicy says
    code, seen = call(operator, "GET", f"/v1/checkouts/{NS}/{name}", access)
    assert code == 200 and seen["phase"] == "CheckedIn" and "credential" not in seen

    assert promote(plane, "secadmin", NS, "ci", phase="Draft").returncode == 0
    deadline = time.monotonic() + 15
    while True:  # the broker reads kopf's index, which follows the API server within moments
        code, refused = post(operator.url + "/v1/checkouts", body=body(), bearer=access)
        if code != 201 or time.monotonic() > deadline:
            break
        call(operator, "DELETE", f"/v1/checkouts/{NS}/{refused['checkout']}", access)
        time.sleep(0.2)
    assert code == 401 and refused["error"] == "invalid_token", refused
    assert f"WorkloadConnection {NS}/ci is no longer Active" in refused["error_description"]
    assert call(operator, "DELETE", f"/v1/checkouts/{NS}/{name}", access)[0] == 401


def dry_run(plane: ControlPlane, who: str, spec: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    doc = kubepam_object(
        "Checkout", "probe", {"project": "ops", "account": ACCOUNT, "reason": "r", **spec}, NS
    )
    result = plane.kubectl(
        who, "create", "--dry-run=server", "-o", "json", "-f", "-", input_text=json.dumps(doc), check=False
    )
    return result.returncode, result.stderr, json.loads(result.stdout) if result.returncode == 0 else {}


@pytest.mark.parametrize("who", ["alice", "mallory"])
def test_people_cannot_write_a_workload_requester_or_role(plane: ControlPlane, world: str, who: str) -> None:
    code, err, _ = dry_run(plane, who, {"requester": who, "workloadRole": "deployer"})
    assert code != 0 and "spec.workloadRole is set only by the kubepam operator" in err, err
    code, err, stored = dry_run(plane, who, {"requester": f"workload:{NS}/ci:repo:acme/payments"})
    assert code == 0, err
    assert stored["spec"]["requester"] == who  # the API server's word: the caller, never a workload


def test_the_operators_workload_checkout_has_a_role_and_no_groups(plane: ControlPlane, world: str) -> None:
    job = f"workload:{NS}/ci:repo:acme/payments"
    code, err, stored = dry_run(plane, "operator", {"requester": job, "workloadRole": "deployer"})
    assert code == 0, err
    assert stored["spec"]["requester"] == job and "groups" not in stored["spec"]
    code, err, _ = dry_run(plane, "operator", {"requester": job, "workloadRole": "deployer", "groups": ["x"]})
    assert code != 0 and "a workload's checkout carries no spec.groups" in err, err
    code, err, _ = dry_run(plane, "operator", {"requester": job})
    assert code != 0 and "a workload's checkout names its spec.workloadRole" in err, err
    patch = json.dumps({"spec": {"workloadRole": "other"}})
    apply(
        plane,
        "operator",
        kubepam_object(
            "Checkout",
            "immutable",
            {
                "project": "ops",
                "account": "nobody",
                "reason": "r",
                "requester": job,
                "workloadRole": "deployer",
            },
            NS,
        ),
    )
    changed = plane.kubectl(
        "secadmin", "patch", "checkout", "immutable", "-n", NS, "--type=merge", "-p", patch, check=False
    )
    assert changed.returncode != 0 and "spec.workloadRole is immutable" in changed.stderr, changed.stderr
