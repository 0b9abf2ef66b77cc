"""The e2e harness: the operator as a real process (the same `kubepam run` as in production) running
under the `operator` identity against the session's control plane, plus small kubectl helpers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubepam.dev.cluster import ControlPlane, free_port
from kubepam.domain.durations import parse_duration


@dataclass
class OperatorProcess:
    plane: ControlPlane
    log_path: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # what the interpreter runs (the benchmarks swap in a wrapper, e.g. one that traces allocations)
    argv: tuple[str, ...] = ("-m", "kubepam", "run")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.plane.kubeconfig("operator")),
            KUBEPAM_BROKER_PORT=str(self.port),
            KUBEPAM_ISSUER=self.url,
            KUBEPAM_LOG_LEVEL="INFO",
            KUBEPAM_JWKS_MIN_REFETCH="1s",
            KUBEPAM_SYNC_GRACE="1s",
            # the audit file sink, next to the log (tests/e2e/test_zz_audit_secrets.py greps both)
            KUBEPAM_AUDIT_FILE=str(self.log_path.with_suffix(".audit.jsonl")),
        )
        env.update(self.env_overrides)
        return env

    def start(self, timeout: float = 60) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv], env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not ready:\n{self.logs()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def kubectl_json(plane: ControlPlane, identity: str, *args: str) -> Any:
    return json.loads(plane.kubectl(identity, *args, "-o", "json").stdout)


def apply(
    plane: ControlPlane, identity: str, *docs: dict[str, Any], check: bool = True
) -> subprocess.CompletedProcess[str]:
    # JSON, not YAML: Go's YAML reads a bare key y as true, which would eat a JWK's "y".
    text = "\n---\n".join(json.dumps(doc) for doc in docs)
    return plane.kubectl(identity, "apply", "-f", "-", input_text=text, check=check)


def wait_for(
    plane: ControlPlane, identity: str, what: str, condition: str, namespace: str, timeout: str = "60s"
) -> subprocess.CompletedProcess[str]:
    """kubectl wait, once the object exists (kubectl wait answers NotFound at once for an object the
    operator has not created yet, e.g. a ConfigMap it publishes a moment after the Project is applied)."""
    deadline = time.monotonic() + parse_duration(timeout).total_seconds()
    while (
        plane.kubectl(identity, "get", what, "-n", namespace, "-o", "name", check=False).returncode != 0
        and time.monotonic() < deadline
    ):
        time.sleep(0.3)
    return plane.kubectl(
        identity, "wait", f"--for={condition}", f"--timeout={timeout}", "-n", namespace, what, check=False
    )


def team_namespace(plane: ControlPlane, name: str) -> str:
    """A namespace that opts in to kubepam (the operator may manage Secrets and ConfigMaps there)."""
    apply(
        plane,
        "admin",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "kubepam-operator", "namespace": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kubepam-operator-namespace",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "kubepam-operator", "namespace": "kubepam-system"}
            ],
        },
    )
    return name


def post(
    url: str,
    *,
    form: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    bearer: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST a form or a JSON body to the broker; returns (status, JSON answer) for errors too."""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded" if form is not None else "application/json"
    }
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    data = urllib.parse.urlencode(form).encode() if form is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


PASSWORDS_SEEN: set[str] = set()  # every PostgreSQL admin password handed to the operator this session


def postgres_admin_secret(
    plane: ControlPlane,
    namespace: str,
    password: str,
    port: int | None,
    *,
    name: str = "pg-admin",
    allowed_hosts: str | None = None,
) -> None:
    """The Secret through which the operator reaches a test PostgreSQL as its superuser, pinned (as a
    security admin does) to 127.0.0.1:<port> or to ``allowed_hosts``; neither: no pinning annotation."""
    PASSWORDS_SEEN.add(password)  # the audit trail must never show one (test_zz_audit_secrets.py)
    allowed = allowed_hosts if allowed_hosts is not None else (f"127.0.0.1:{port}" if port else None)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if allowed is not None:
        meta["annotations"] = {"kubepam.io/allowed-hosts": allowed}
    apply(
        plane,
        "admin",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "Opaque",
            "stringData": {"username": "postgres", "password": password},
        },
    )


def postgres_ca_configmap(
    plane: ControlPlane, namespace: str, ca_pem: str, name: str = "pg-ca-bundle"
) -> None:
    """The ConfigMap with the CA that signed the test PostgreSQL's certificate (postgresql.caConfigMapRef),
    named so that no Project's derived `<project>-ca` ConfigMap can be it."""
    apply(
        plane,
        "admin",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"ca.crt": ca_pem},
        },
    )


def exchange(
    op: OperatorProcess, namespace: str, conn: str, token: str, path: str = "/v1/token"
) -> tuple[int, dict[str, Any]]:
    return post(
        op.url + path,
        form={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "connection": f"{namespace}/{conn}",
        },
    )


def exchange_until(
    op: OperatorProcess, namespace: str, conn: str, token: str, status: int, timeout: float = 15
) -> dict[str, Any]:
    """The broker reads kopf's index, which follows the API server within moments: poll, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = exchange(op, namespace, conn, token)
        if code == status or time.monotonic() > deadline:
            assert code == status, body
            return body
        time.sleep(0.2)


def promote(
    plane: ControlPlane,
    who: str,
    namespace: str,
    name: str,
    activated_by: str | None = None,
    phase: str = "Active",
) -> subprocess.CompletedProcess[str]:
    status: dict[str, Any] = {"phase": phase}
    if phase == "Active":
        status["activatedBy"] = activated_by or who
    return plane.kubectl(
        who,
        "patch",
        "workloadconnection",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        check=False,
    )


def kubepam_object(kind: str, name: str, spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A kubepam object of ``kind`` as a test applies it."""
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def object_status(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return dict(kubectl_json(plane, "admin", "get", kind, name, "-n", namespace).get("status") or {})


def wait_status(
    plane: ControlPlane, kind: str, name: str, namespace: str, fits: Any, timeout: float = 60
) -> dict[str, Any]:
    """Poll an object's status (bounded) until ``fits(status)``; the last status is in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        current = object_status(plane, kind, name, namespace)
        if fits(current) or time.monotonic() > deadline:
            assert fits(current), current
            return current
        time.sleep(0.2)
