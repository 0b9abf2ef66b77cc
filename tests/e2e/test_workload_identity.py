"""Workload identity on the real control plane: tokens shaped like each provider's (minted here with
local keys, JWKS served from a local HTTP server) are exchanged after a security admin's promotion and
refused before it; the API server enforces who may promote and who may change an Active connection;
hostile tokens are refused without side effects or leaks; issuer key rotation and outages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    exchange,
    exchange_until,
    kubectl_json,
    promote,
    team_namespace,
    wait_for,
)
from tests.servers import LocalHTTP
from tests.tokens import AUDIENCE, CIRCLE_PROJECT, ISSUERS, Issuer, hostile_tokens

NS = "workloads"
PROVIDERS = ["github", "gitlab", "circleci", "gcp", "generic"]
BINDINGS: dict[str, list[dict[str, Any]]] = {
    "github": [
        {"claim": "repository", "operator": "equals", "value": "acme/payments"},
        {"claim": "ref", "operator": "glob", "value": "refs/heads/*"},
    ],
    "gitlab": [{"claim": "project_path", "operator": "equals", "value": "acme/web"}],
    "circleci": [{"claim": "oidc.circleci.com/project-id", "operator": "equals", "value": CIRCLE_PROJECT}],
    "gcp": [{"claim": "/google/compute_engine/project_id", "operator": "equals", "value": "acme-prod"}],
    "generic": [{"claim": "pipeline", "operator": "startsWith", "value": "acme/"}],
}
ROLE_CONDITIONS: dict[str, dict[str, Any]] = {
    "github": {"claim": "environment", "operator": "in", "values": ["production"]},
    "gitlab": {"claim": "ref_protected", "operator": "equals", "value": "true"},
    "circleci": {"claim": "oidc.circleci.com/context-ids", "operator": "exists"},
    "gcp": {"claim": "/google/compute_engine/project_number", "operator": "equals", "value": "1234567890"},
    "generic": {"claim": "run", "operator": "regex", "value": "[0-9]+"},
}


@pytest.fixture(scope="module")
def issuers() -> dict[str, Issuer]:
    algs = {"github": "RS256", "gitlab": "RS256", "circleci": "RS256", "gcp": "RS256", "generic": "EdDSA"}
    return {p: Issuer(ISSUERS[p], alg=algs[p]) for p in PROVIDERS}


@pytest.fixture(scope="module")
def jwks_server(issuers: dict[str, Issuer]) -> Iterator[LocalHTTP]:
    with LocalHTTP() as server:
        for provider, issuer in issuers.items():
            server.json(f"/{provider}/jwks", issuer.jwks)
        yield server


@pytest.fixture(scope="module")
def ns(plane: ControlPlane) -> str:
    return team_namespace(plane, NS)


def connection(name: str, provider: str, jwks_url: str, claims: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": provider,
        "audiences": [AUDIENCE],
        "claims": claims,
        "jwksUrl": jwks_url,
        "accessTokenTTL": "5m",
    }
    if provider in ("circleci", "generic"):
        spec["issuer"] = ISSUERS[provider]
    if provider == "generic":  # no preset: the connection names what its issuer signs with
        spec["algorithms"] = ["RS256", "ES256", "EdDSA"]
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "WorkloadConnection",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def role(name: str, conn: str, condition: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "WorkloadRole",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"connections": [conn], "match": [{"conditions": [condition]}]},
    }


def broker_key(op: OperatorProcess, token: str) -> Any:
    with urllib.request.urlopen(op.url + "/.well-known/jwks.json", timeout=5) as resp:
        keys = json.loads(resp.read())["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.PyJWK(next(k for k in keys if k["kid"] == kid)).key


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_tokens_are_exchanged_after_promotion_and_refused_before(
    plane: ControlPlane,
    operator: OperatorProcess,
    jwks_server: LocalHTTP,
    issuers: dict[str, Issuer],
    ns: str,
    provider: str,
) -> None:
    name = f"{provider}-ci"
    apply(
        plane,
        "devops",
        connection(name, provider, f"{jwks_server.url}/{provider}/jwks", BINDINGS[provider]),
        role(f"{provider}-deployer", name, ROLE_CONDITIONS[provider]),
    )
    assert wait_for(plane, "devops", f"workloadconnection/{name}", "condition=Ready", NS).returncode == 0
    live = kubectl_json(plane, "devops", "get", "workloadconnection", name, "-n", NS)
    assert live["status"]["phase"] == "Draft" and live["status"]["keyCount"] == 1
    token = issuers[provider].mint(provider)

    body = exchange_until(operator, NS, name, token, 403)
    assert body["error"] == "unauthorized_client" and "is Draft" in body["error_description"]
    code, report = exchange(operator, NS, name, token, "/v1/token/validate")
    assert code == 200 and report["verdict"] == "valid" and report["wouldIssue"] is False
    assert report["wouldMatchWhenActive"] == [f"{NS}/{provider}-deployer"]

    assert promote(plane, "secadmin", NS, name).returncode == 0
    body = exchange_until(operator, NS, name, token, 200)
    claims = jwt.decode(
        body["access_token"],
        broker_key(operator, body["access_token"]),
        algorithms=["EdDSA"],
        audience="kubepam",
        issuer=operator.url,
    )
    assert claims["roles"] == [f"{NS}/{provider}-deployer"]
    assert claims["usernames"] == [f"wl_{provider}-deployer"]
    assert body["expires_in"] == 300


def test_separation_of_duties_is_enforced_by_the_api_server(
    plane: ControlPlane,
    operator: OperatorProcess,
    jwks_server: LocalHTTP,
    issuers: dict[str, Issuer],
    ns: str,
) -> None:
    name = "guarded"
    apply(
        plane,
        "devops",
        connection(name, "github", f"{jwks_server.url}/github/jwks", BINDINGS["github"]),
        role("guarded-deployer", name, ROLE_CONDITIONS["github"]),
    )
    assert wait_for(plane, "devops", f"workloadconnection/{name}", "condition=Ready", NS).returncode == 0

    devops = promote(plane, "devops", NS, name)
    assert devops.returncode != 0 and "Forbidden" in devops.stderr  # RBAC: no access to status
    by_operator = promote(plane, "operator", NS, name)
    assert by_operator.returncode != 0
    assert "only members of kubepam:security-admins may change status.phase" in by_operator.stderr
    on_behalf = promote(plane, "secadmin", NS, name, activated_by="bob")
    assert "status.activatedBy must be your own username (secadmin)" in on_behalf.stderr
    assert promote(plane, "secadmin", NS, name).returncode == 0
    live = kubectl_json(plane, "admin", "get", "workloadconnection", name, "-n", NS)
    assert (live["status"]["phase"], live["status"]["activatedBy"]) == ("Active", "secadmin")

    change = plane.kubectl(
        "devops",
        "patch",
        "workloadconnection",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"accessTokenTTL":"12h"}}',
        check=False,
    )
    assert change.returncode != 0 and "is Active: only kubepam:security-admins may change it" in change.stderr
    delete = plane.kubectl("devops", "delete", "workloadconnection", name, "-n", NS, check=False)
    assert delete.returncode != 0 and "may delete it" in delete.stderr
    token = issuers["github"].mint("github")
    exchange_until(operator, NS, name, token, 200)

    assert promote(plane, "secadmin", NS, name, phase="Draft").returncode == 0  # demotion stops issuance
    assert exchange_until(operator, NS, name, token, 403)["error"] == "unauthorized_client"
    edit = plane.kubectl(
        "devops",
        "patch",
        "workloadconnection",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"description":"back in draft"}}',
        check=False,
    )
    assert edit.returncode == 0, edit.stderr  # Draft again: DevOps may change it


def test_hostile_tokens_are_refused_without_side_effects_or_leaks(
    plane: ControlPlane, operator: OperatorProcess, jwks_server: LocalHTTP, ns: str
) -> None:
    issuer = Issuer(ISSUERS["generic"], alg="RS256")
    jwks_server.json("/hostile/jwks", issuer.jwks)
    name = "hostile"
    apply(
        plane,
        "devops",
        connection(name, "generic", f"{jwks_server.url}/hostile/jwks", BINDINGS["generic"]),
        role("hostile-runner", name, ROLE_CONDITIONS["generic"]),
    )
    assert wait_for(plane, "devops", f"workloadconnection/{name}", "condition=Ready", NS).returncode == 0
    assert promote(plane, "secadmin", NS, name).returncode == 0
    exchange_until(operator, NS, name, issuer.mint(), 200)
    before = kubectl_json(plane, "admin", "get", "workloadconnection", name, "-n", NS)["metadata"][
        "resourceVersion"
    ]

    cases = hostile_tokens(issuer)
    seen = {}
    for label, token, _, status in cases:
        code, body = exchange(operator, NS, name, token)
        assert code == status, (label, body)
        assert "access_token" not in body
        seen[label] = body["error_description"]
    assert len(set(seen.values())) == len(cases), seen  # each attack has its own explanation
    assert "unsigned tokens (alg none) are refused" in seen["alg-none"]
    assert "symmetric algorithm HS256 is refused" in seen["hs256-with-public-key"]

    after = kubectl_json(plane, "admin", "get", "workloadconnection", name, "-n", NS)
    assert after["metadata"]["resourceVersion"] == before  # nothing changed
    events = plane.kubectl("admin", "get", "events", "-A", "-o", "json").stdout
    status = json.dumps(after["status"])
    logs = operator.logs()
    for label, token, _, _ in cases:
        for piece in {token, *[p for p in token.split(".") if len(p) > 16]}:
            assert piece not in logs and piece not in events and piece not in status, label


def test_issuer_key_rotation_and_outage(
    plane: ControlPlane, operator: OperatorProcess, jwks_server: LocalHTTP, ns: str
) -> None:
    old = Issuer(ISSUERS["generic"], alg="ES256")
    current = {"keys": [old.public_jwk()]}
    jwks_server.json("/rotating/jwks", lambda: current)
    name = "rotating"
    apply(
        plane,
        "devops",
        connection(name, "generic", f"{jwks_server.url}/rotating/jwks", BINDINGS["generic"]),
        role("rotating-runner", name, ROLE_CONDITIONS["generic"]),
    )
    assert wait_for(plane, "devops", f"workloadconnection/{name}", "condition=Ready", NS).returncode == 0
    assert promote(plane, "secadmin", NS, name).returncode == 0
    exchange_until(operator, NS, name, old.mint(), 200)

    time.sleep(1.1)  # the operator runs with a 1 s minimum between unknown-kid refetches
    new = Issuer(ISSUERS["generic"], alg="ES256")
    current["keys"] = [old.public_jwk(), new.public_jwk()]  # the issuer rotates
    fetches = jwks_server.hits["/rotating/jwks"]
    code, body = exchange(operator, NS, name, new.mint())
    assert code == 200, body
    assert jwks_server.hits["/rotating/jwks"] == fetches + 1  # accepted after exactly one refetch

    jwks_server.down = True  # the issuer's JWKS endpoint is down: cached keys keep working
    try:
        for issuer in (old, new):
            code, body = exchange(operator, NS, name, issuer.mint())
            assert code == 200, body
        time.sleep(1.1)
        code, body = exchange(operator, NS, name, Issuer(ISSUERS["generic"], alg="ES256").mint())
        assert code == 400 and body["error"] == "invalid_grant" and "no key" in body["error_description"]
    finally:
        jwks_server.down = False


def test_workload_login_cli_against_the_running_broker(
    plane: ControlPlane, operator: OperatorProcess, issuers: dict[str, Issuer], ns: str, tmp_path: Path
) -> None:
    # Relies on github-ci, promoted by the provider test above.
    exchange_until(operator, NS, "github-ci", issuers["github"].mint("github"), 200)
    (tmp_path / "id-token").write_text(issuers["github"].mint("github"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubepam",
            "workload",
            "login",
            "--connection",
            f"{NS}/github-ci",
            "--broker",
            operator.url,
            "--token-file",
            str(tmp_path / "id-token"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), options={"verify_signature": False})
    assert claims["roles"] == [f"{NS}/github-deployer"]
