"""`kubepam plan` against the real control plane: what it says a change grants is what the API server
and the operator grant once the change is applied (a certificate refused before is issued after), and
planning the applied files again shows no change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import apply, kubepam_object, object_status, team_namespace, wait_for

NS = "plan-live"


def policy(servers: dict[str, Any]) -> dict[str, Any]:
    return kubepam_object(
        "AccessPolicy",
        "users",
        {
            "principals": {"groups": ["kubepam:users"]},
            "rules": [{"name": "servers", "projects": ["web"], "servers": servers}],
        },
        NS,
    )


def run_plan(plane: ControlPlane, directory: Path) -> tuple[int, dict[str, Any]]:
    code = "import sys; from kubepam.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "plan", "-f", str(directory), "--live", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig("admin"))},
        check=False,
    )
    assert done.returncode in (0, 2), done.stderr
    return done.returncode, json.loads(done.stdout)


def ssh_phase(plane: ControlPlane, name: str, server: str) -> str:
    key = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    spec = {"project": "web", "server": server, "publicKey": key, "requester": "alice"}
    apply(plane, "alice", kubepam_object("SSHCertificateRequest", name, spec, NS))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        phase = str(object_status(plane, "sshcertificaterequest", name, NS).get("phase") or "")
        if phase in ("Issued", "Denied"):
            return phase
        time.sleep(0.2)
    return "timeout"


def test_the_plan_says_what_the_cluster_then_grants(
    plane: ControlPlane, operator: Any, tmp_path: Path
) -> None:
    team_namespace(plane, NS)
    server = {"apiVersion": "kubepam.io/v1alpha1", "kind": "Server"}
    apply(
        plane,
        "admin",
        kubepam_object("Project", "web", {}, NS),
        server
        | {
            "metadata": {"name": "web-1", "namespace": NS, "labels": {"role": "web"}},
            "spec": {"project": "web", "hostname": "web-1"},
        },
        server
        | {
            "metadata": {"name": "db-1", "namespace": NS, "labels": {"role": "db"}},
            "spec": {"project": "web", "hostname": "db-1"},
        },
        policy({"matchLabels": {"role": "web"}}),
    )
    for target in ("project/web", "server/web-1", "server/db-1", "accesspolicy/users"):
        assert wait_for(plane, "admin", target, "condition=Ready", NS, "60s").returncode == 0
    assert ssh_phase(plane, "before", "db-1") == "Denied"

    proposed = policy({})  # every server of the project
    (tmp_path / "policy.yaml").write_text(json.dumps(proposed))  # JSON is YAML
    code, report = run_plan(plane, tmp_path)
    lines = [c["line"] for c in report["access"]]
    assert code == 2 and report["live"] is True
    assert lines == [
        "+ group kubepam:users -> ssh plan-live/db-1 (as their own username, ttl 3m)",
        "+ group kubepam:users -> x509 plan-live/db-1 (as their own username, ttl 3m)",
    ]
    assert all(c["widening"] for c in report["access"])

    apply(plane, "admin", proposed)
    deadline = time.monotonic() + 30
    phase = "Denied"
    attempt = 0
    while phase != "Issued" and time.monotonic() < deadline:  # the operator's index follows the apply
        attempt += 1
        phase = ssh_phase(plane, f"after-{attempt}", "db-1")
    assert phase == "Issued"
    assert run_plan(plane, tmp_path) == (
        0,
        {"live": True, "access": [], "created": [], "deleted": [], "operator": []},
    )
