"""Projects and certificates on the real control plane with a real OpenSSH sshd on a loopback port
whose TrustedUserCAKeys comes from the project's ConfigMap: people's and workloads' certificates log
in; expired, wrong-principal and other-project certificates are refused; X.509 verifies with openssl;
the CA survives an operator restart; during a rotation both CAs are trusted; enrollment."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    exchange_until,
    kubectl_json,
    post,
    promote,
    team_namespace,
    wait_for,
)
from tests.sshd import LocalSSHD, new_key
from tests.tokens import AUDIENCE, ISSUERS, Issuer

NS = "certs"


def obj(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "kubepam.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def configmap(plane: ControlPlane, project: str, key: str) -> str:
    data = kubectl_json(plane, "admin", "get", "configmap", f"{project}-ca", "-n", NS)["data"]
    return str(data[key])


def wait_phase(plane: ControlPlane, kind: str, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = kubectl_json(plane, "admin", "get", kind, name, "-n", NS).get("status") or {}
        if status.get("phase") in ("Issued", "Denied") or time.monotonic() > deadline:
            return dict(status)
        time.sleep(0.2)


def ssh_request(
    plane: ControlPlane,
    who: str,
    name: str,
    key: Path,
    project: str = "web",
    server: str | None = "web-1",
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "project": project,
        "publicKey": key.with_suffix(".pub").read_text().strip(),
        "requester": who,
        **extra,
    }
    if server:
        spec["server"] = server
    apply(plane, who, obj("SSHCertificateRequest", name, spec))
    return wait_phase(plane, "sshcertificaterequest", name)


def write_cert(key: Path, status: dict[str, Any], suffix: str) -> Path:
    cert = key.parent / f"{key.name}-{suffix}-cert.pub"
    cert.write_text(status["certificate"] + "\n")
    return cert


@pytest.fixture(scope="module")
def env(
    plane: ControlPlane, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalSSHD, Path]]:
    team_namespace(plane, NS)
    work = tmp_path_factory.mktemp("ssh")
    sshd = LocalSSHD(work / "sshd", principals=["alice", "wl_deployer"])
    apply(
        plane,
        "devops",
        obj(
            "Project",
            "web",
            {
                "certificates": {"defaultTTL": "3m", "maxTTL": "1h"},
                "certificateAuthority": {"rotation": {"generation": 0, "overlap": "20s"}},
            },
        ),
        obj("Project", "other", {"certificateAuthority": {"keyType": "ECDSA-P256"}}),
        obj(
            "Server",
            "web-1",
            {
                "project": "web",
                "hostname": "web-1.certs.test",
                "addresses": ["127.0.0.1"],
                "sshPort": sshd.port,
            },
            {"role": "web"},
        ),
        obj("Server", "db-1", {"project": "web", "hostname": "db-1.certs.test"}, {"role": "db"}),
        obj("Server", "other-1", {"project": "other", "hostname": "other-1.certs.test"}),
        obj(
            "AccessPolicy",
            "web-access",
            {
                "principals": {"groups": ["kubepam:users"], "workloadRoles": ["deployer"]},
                "rules": [
                    {
                        "name": "web-ssh",
                        "projects": ["web", "other"],
                        "servers": {"matchLabels": {"role": "web"}},
                    }
                ],
            },
        ),
        obj(
            "AccessPolicy",
            "other-access",
            {
                "principals": {"users": ["alice"]},
                "rules": [{"name": "anything-in-other", "projects": ["other"], "servers": {}}],
            },
        ),
    )
    for project in ("web", "other"):
        assert wait_for(plane, "devops", f"project/{project}", "condition=Ready", NS).returncode == 0
    sshd.trust(configmap(plane, "web", "trusted-user-ca-keys"))
    sshd.start()
    try:
        yield sshd, work
    finally:
        sshd.stop()


def test_a_persons_certificate_logs_in_with_the_expected_contents(
    plane: ControlPlane, env: tuple[LocalSSHD, Path]
) -> None:
    sshd, work = env
    key = new_key(work / "alice")
    status = ssh_request(plane, "alice", "alice-web", key)
    assert status["phase"] == "Issued", status
    cert = write_cert(key, status, "web")
    login = sshd.login(key, cert)
    assert login.returncode == 0 and login.stdout.strip() == "kubepam-ok", login.stderr + sshd.logs()[-1500:]
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True).stdout
    assert 'Key ID: "kubepam:certs/alice-web:alice"' in shown
    assert "Principals: \n                alice\n" in shown
    after = datetime.fromisoformat(status["validAfter"])
    before = datetime.fromisoformat(status["validBefore"])
    assert (before - after).total_seconds() == 180 + 30  # 3 m default, from 30 s before issue
    assert f"from {after.strftime('%Y-%m-%dT%H:%M:%S')}" in shown or "Valid: from" in shown
    assert "permit-pty" in shown
    assert f"ID kubepam:certs/alice-web:alice (serial {status['serial']})" in sshd.logs()


def test_certificates_are_refused_for_other_principals_and_other_project_cas(
    plane: ControlPlane, env: tuple[LocalSSHD, Path]
) -> None:
    sshd, work = env
    bob_key = new_key(work / "bob")
    status = ssh_request(plane, "bob", "bob-web", bob_key)
    assert status["phase"] == "Issued" and status["principals"] == ["bob"]
    refused = sshd.login(bob_key, write_cert(bob_key, status, "web"))
    assert refused.returncode == 255 and "Permission denied" in refused.stderr

    key = new_key(work / "alice-other")
    status = ssh_request(plane, "alice", "alice-other", key, project="other", server=None)
    assert status["phase"] == "Issued", status
    refused = sshd.login(key, write_cert(key, status, "other"))
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_an_expired_certificate_is_refused(plane: ControlPlane, env: tuple[LocalSSHD, Path]) -> None:
    sshd, work = env
    key = new_key(work / "alice-short")
    status = ssh_request(plane, "alice", "alice-short", key, ttl="30s")
    cert = write_cert(key, status, "short")
    assert sshd.login(key, cert).returncode == 0
    wait = (datetime.fromisoformat(status["validBefore"]) - datetime.now(UTC)).total_seconds() + 1.5
    time.sleep(max(wait, 0))
    refused = sshd.login(key, cert)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


@pytest.mark.parametrize(
    ("who", "name", "server", "extra", "reason"),
    [
        ("alice", "deny-db", "db-1", {}, "server db-1 is not selected by role=web"),
        ("approver", "deny-nobody", "web-1", {}, "no AccessPolicy in namespace certs names user approver"),
        ("alice", "deny-principal", "web-1", {"principals": ["root"]}, "principals root are not allowed"),
        ("alice", "deny-wrong-project", "other-1", {}, "belongs to project other, not web"),
    ],
)
def test_requests_no_rule_allows_are_denied_with_the_reason(
    plane: ControlPlane,
    env: tuple[LocalSSHD, Path],
    who: str,
    name: str,
    server: str,
    extra: dict[str, Any],
    reason: str,
) -> None:
    _, work = env
    key = work / "alice" if (work / "alice").exists() else new_key(work / "alice")
    if who == "approver":
        plane.kubectl(
            "admin",
            "create",
            "rolebinding",
            "approver-can-request",
            "-n",
            NS,
            "--clusterrole=kubepam-user",
            "--user=approver",
            check=False,
        )
    status = ssh_request(plane, who, name, key, server=server, **extra)
    assert status["phase"] == "Denied" and reason in status["reason"], status
    ready = wait_for(plane, "admin", f"sshcertificaterequest/{name}", "condition=Stalled", NS)
    assert ready.returncode == 0


def test_requester_comes_from_the_api_server_not_the_client(
    plane: ControlPlane, env: tuple[LocalSSHD, Path]
) -> None:
    _, work = env
    key = work / "alice"
    apply(
        plane,
        "bob",
        obj(
            "SSHCertificateRequest",
            "bob-pretends",
            {
                "project": "web",
                "server": "web-1",
                "requester": "alice",
                "groups": ["kubepam:security-admins"],
                "publicKey": key.with_suffix(".pub").read_text().strip(),
            },
        ),
    )
    live = kubectl_json(plane, "admin", "get", "sshcertificaterequest", "bob-pretends", "-n", NS)
    assert live["spec"]["requester"] == "bob" and "kubepam:security-admins" not in live["spec"]["groups"]
    assert wait_phase(plane, "sshcertificaterequest", "bob-pretends")["principals"] == ["bob"]


def test_x509_client_certificate_verifies_against_the_published_ca(
    plane: ControlPlane, env: tuple[LocalSSHD, Path]
) -> None:
    _, work = env
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
        )  # ignored: kubepam names it
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    apply(
        plane,
        "alice",
        obj(
            "X509CertificateRequest",
            "alice-x509",
            {"project": "web", "server": "web-1", "requester": "alice", "csr": csr},
        ),
    )
    status = wait_phase(plane, "x509certificaterequest", "alice-x509")
    assert status["phase"] == "Issued", status
    (work / "client.crt").write_text(status["certificate"])
    (work / "ca.crt").write_text(configmap(plane, "web", "ca.crt"))
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(work / "ca.crt"),
            "-purpose",
            "sslclient",
            str(work / "client.crt"),
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr
    cert = x509.load_pem_x509_certificate(status["certificate"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"


def _workload_token(plane: ControlPlane, operator: OperatorProcess) -> str:
    issuer = Issuer(ISSUERS["generic"], alg="ES256")
    apply(
        plane,
        "devops",
        obj(
            "WorkloadConnection",
            "ci",
            {
                "provider": "generic",
                "issuer": ISSUERS["generic"],
                "algorithms": ["ES256"],
                "audiences": [AUDIENCE],
                "jwks": issuer.jwks(),
                "claims": [{"claim": "pipeline", "operator": "startsWith", "value": "acme/"}],
            },
        ),
        obj(
            "WorkloadRole",
            "deployer",
            {
                "connections": ["ci"],
                "match": [{"conditions": [{"claim": "branch", "operator": "equals", "value": "main"}]}],
            },
        ),
        obj(
            "WorkloadRole",
            "stranger",
            {"connections": ["ci"], "match": [{"conditions": [{"claim": "run", "operator": "exists"}]}]},
        ),
    )
    assert wait_for(plane, "devops", "workloadconnection/ci", "condition=Ready", NS).returncode == 0
    assert promote(plane, "secadmin", NS, "ci").returncode == 0
    body = exchange_until(operator, NS, "ci", issuer.mint(), 200)
    return str(body["access_token"])


def sign(operator: OperatorProcess, bearer: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return post(operator.url + "/v1/ssh/sign", body=body, bearer=bearer)


def test_a_workloads_certificate_is_for_wl_role_and_logs_in(
    plane: ControlPlane, operator: OperatorProcess, env: tuple[LocalSSHD, Path]
) -> None:
    sshd, work = env
    access = _workload_token(plane, operator)
    key = new_key(work / "runner")
    body = {
        "role": "deployer",
        "project": "web",
        "server": "web-1",
        "publicKey": key.with_suffix(".pub").read_text().strip(),
    }
    code, answer = sign(operator, access, body)
    assert code == 200, answer
    assert answer["principals"] == ["wl_deployer"]
    cert = key.parent / "runner-cert.pub"
    cert.write_text(answer["certificate"] + "\n")
    login = sshd.login(key, cert)
    assert login.returncode == 0, login.stderr + sshd.logs()[-1000:]

    code, answer = sign(operator, access, {**body, "server": "db-1"})
    assert code == 403 and "not selected by role=web" in answer["error_description"]
    code, answer = sign(operator, access, {**body, "role": "admin"})
    assert code == 403 and answer["error"] == "access_denied"
    code, answer = sign(operator, "not-a-token", body)
    assert code == 401 and answer["error"] == "invalid_token"
    assert promote(plane, "secadmin", NS, "ci", phase="Draft").returncode == 0
    deadline = time.monotonic() + 10
    while (code := sign(operator, access, body)[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert code == 401  # a demoted connection's tokens stop working for certificates too


def test_kubepam_ssh_requests_waits_writes_and_logs_in(
    plane: ControlPlane, env: tuple[LocalSSHD, Path]
) -> None:
    sshd, work = env
    key = new_key(work / "cli-alice")
    opts = [
        arg
        for pair in zip(
            ["--ssh-option"] * 4,
            ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes", "LogLevel=ERROR"],
            strict=True,
        )
        for arg in pair
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubepam",
            "ssh",
            "web-1",
            "-n",
            NS,
            "-i",
            str(key),
            "--login",
            sshd.user,
            *opts,
            "--",
            "echo",
            "hello-from-kubepam-ssh",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "KUBECONFIG": str(plane.kubeconfig("alice"))},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello-from-kubepam-ssh"
    assert (work / "cli-alice-cert.pub").read_text().startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert "valid until" in result.stderr


def test_the_ca_survives_an_operator_restart_unchanged(
    plane: ControlPlane, operator: OperatorProcess, env: tuple[LocalSSHD, Path]
) -> None:
    before = kubectl_json(plane, "admin", "get", "project", "web", "-n", NS)["status"]["ca"]
    secret_before = kubectl_json(plane, "admin", "get", "secret", before["secretName"], "-n", NS)
    operator.stop()
    operator.start()
    plane.kubectl("devops", "annotate", "project", "web", "-n", NS, "touched=1", "--overwrite")
    assert wait_for(plane, "devops", "project/web", "condition=Ready", NS).returncode == 0
    after = kubectl_json(plane, "admin", "get", "project", "web", "-n", NS)["status"]["ca"]
    secret_after = kubectl_json(plane, "admin", "get", "secret", after["secretName"], "-n", NS)
    assert after["ssh"]["fingerprint"] == before["ssh"]["fingerprint"]
    assert after["x509"]["fingerprint"] == before["x509"]["fingerprint"]
    assert secret_after["metadata"]["resourceVersion"] == secret_before["metadata"]["resourceVersion"]
    owner = secret_after["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Project", "web")


def test_during_a_rotation_both_cas_are_trusted_then_the_old_one_goes(
    plane: ControlPlane, env: tuple[LocalSSHD, Path]
) -> None:
    sshd, work = env
    key = new_key(work / "alice-rot")
    old_cert = write_cert(key, ssh_request(plane, "alice", "rot-old", key, ttl="10m"), "old")
    old_fp = kubectl_json(plane, "admin", "get", "project", "web", "-n", NS)["status"]["ca"]["ssh"][
        "fingerprint"
    ]
    plane.kubectl(
        "devops",
        "patch",
        "project",
        "web",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"certificateAuthority":{"rotation":{"generation":1,"overlap":"20s"}}}}',
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ca = kubectl_json(plane, "admin", "get", "project", "web", "-n", NS)["status"]["ca"]
        if ca["generation"] == 1:
            break
        time.sleep(0.2)
    assert ca["generation"] == 1 and ca["previous"]["sshFingerprint"] == old_fp
    trusted = configmap(plane, "web", "trusted-user-ca-keys")
    assert trusted.count("\n") == 2 and ":g0" in trusted and ":g1" in trusted
    sshd.trust(trusted)
    new_cert = write_cert(key, ssh_request(plane, "alice", "rot-new", key), "new")
    assert (
        "(using ssh-ed25519)"
        in subprocess.run(["ssh-keygen", "-L", "-f", str(new_cert)], capture_output=True, text=True).stdout
    )
    assert sshd.login(key, old_cert).returncode == 0, "the previous CA must stay trusted during the overlap"
    assert sshd.login(key, new_cert).returncode == 0

    deadline = time.monotonic() + 40  # the scheduler drops the old CA when the 20 s overlap ends
    while (
        ":g0" in (trusted := configmap(plane, "web", "trusted-user-ca-keys")) and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert ":g0" not in trusted
    sshd.trust(trusted)
    assert sshd.login(key, old_cert).returncode == 255
    assert sshd.login(key, new_cert).returncode == 0
    assert (
        kubectl_json(plane, "admin", "get", "project", "web", "-n", NS)["status"]["ca"].get("previous")
        is None
    )


def _enroll(operator: OperatorProcess, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return post(operator.url + "/v1/enroll", body=body)


def test_enrollment_trades_a_token_for_a_server_and_the_ca(
    plane: ControlPlane, operator: OperatorProcess, env: tuple[LocalSSHD, Path]
) -> None:
    import base64

    def token() -> str:
        name = kubectl_json(plane, "admin", "get", "project", "other", "-n", NS)["status"]["enrollment"][
            "secretName"
        ]
        secret = kubectl_json(plane, "admin", "get", "secret", name, "-n", NS)
        return base64.b64decode(secret["data"]["token"]).decode()

    body = {
        "namespace": NS,
        "project": "other",
        "hostname": "Build-7.example.com",
        "os": "linux",
        "labels": {"role": "build"},
        "addresses": ["10.1.2.7"],
    }
    code, answer = _enroll(operator, {**body, "token": "wrong"})
    assert code == 401 and answer["error"] == "invalid_token"
    assert (
        plane.kubectl("admin", "get", "server", "build-7.example.com", "-n", NS, check=False).returncode != 0
    )

    code, answer = _enroll(operator, {**body, "token": token()})
    assert code == 200, answer
    assert answer["server"] == f"{NS}/build-7.example.com"
    assert answer["trustedUserCAKeys"].startswith("ecdsa-sha2-nistp256 ")
    assert "TrustedUserCAKeys" in answer["sshdConfig"]
    server = kubectl_json(plane, "admin", "get", "server", "build-7.example.com", "-n", NS)
    assert server["metadata"]["labels"]["role"] == "build" and server["spec"]["project"] == "other"

    old = token()
    plane.kubectl(
        "devops",
        "patch",
        "project",
        "other",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"enrollment":{"tokenGeneration":1}}}',
    )
    deadline = time.monotonic() + 20
    while token() == old and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _enroll(operator, {**body, "token": old})[0] == 401  # rotation invalidates the old token
    assert _enroll(operator, {**body, "token": token()})[0] == 200
