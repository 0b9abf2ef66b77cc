"""The console's world on the real control plane: a team namespace with a project of kubernetes-backend
shared accounts (one for the browser scenario, one for the action tests, so neither waits on the
other), a CheckoutPolicy with approved elevation, an AccessPolicy for kubepam:users, JIT accounts, and
the console itself as its own process (`kubepam console`), which holds no credential of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane, free_port
from tests.e2e.harness import OperatorProcess, apply, kubepam_object, team_namespace
from tests.oidc_provider import CLIENT_ID as OIDC_CLIENT_ID
from tests.oidc_provider import OidcProvider

NS = "console"
APPS = "console-apps"  # where elevation binds its ClusterRole: never the namespace holding the Secrets
PROJECT = "ops"
BROWSER_ACCOUNT = "ops_admin"
ACTIONS_ACCOUNT = "web_admin"
CONNECTION = "ci"


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return kubepam_object(kind, name, spec, NS)


def start_console(
    plane: ControlPlane, port: int, env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`kubepam console` as its own process on a loopback port, once it answers /healthz. The admin
    kubeconfig gives only the API server's address and CA: the console never reads its credentials
    (kubepam.console.app.cluster_of), and the import contract keeps clients out."""
    with (log or Path(os.devnull)).open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubepam",
                "console",
                "--kubeconfig",
                str(plane.kubeconfig("admin")),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                output = log.read_text() if log else ""
                raise RuntimeError(f"the console did not start:\n{output}") from None
            time.sleep(0.2)


def stop_console(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class ConsoleServer:
    url: str
    plane: ControlPlane
    log: Path
    idp: OidcProvider

    def token(self, who: str) -> str:
        return self.plane.tokens[who]


def seed(plane: ControlPlane) -> None:
    team_namespace(plane, NS)
    team_namespace(plane, APPS)
    apply(
        plane,
        "devops",
        obj(
            "Project",
            PROJECT,
            {
                "sharedAccounts": [
                    {"name": BROWSER_ACCOUNT, "backend": "kubernetes", "description": "Ops break-glass"},
                    {"name": ACTIONS_ACCOUNT, "backend": "kubernetes"},
                ],
                "jit": {
                    "enabled": True,
                    "backend": "kubernetes",
                    "allowedGroups": ["view"],
                    "creators": {"groups": ["kubepam:users"]},
                    "maxDuration": "2h",
                    "namespaces": [APPS],
                },
            },
        ),
        obj(
            "CheckoutPolicy",
            PROJECT,
            {
                "project": PROJECT,
                "maxDuration": "30m",
                "elevation": {
                    "eligibleAccounts": [BROWSER_ACCOUNT, ACTIONS_ACCOUNT],
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
                        "name": "ops",
                        "projects": [PROJECT],
                        "accounts": [BROWSER_ACCOUNT, ACTIONS_ACCOUNT],
                        "elevation": {"allowed": True, "requiresApproval": True},
                    }
                ],
            },
        ),
        obj(
            "WorkloadConnection",
            CONNECTION,
            {
                "provider": "github",
                "audiences": ["kubepam"],
                "claims": [{"claim": "repository_owner", "operator": "equals", "value": "acme"}],
            },
        ),
    )


@pytest.fixture(scope="session")
def console(
    plane: ControlPlane,
    operator: OperatorProcess,
    oidc_provider: OidcProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ConsoleServer]:
    seed(plane)
    port = free_port()
    workdir = Path(tmp_path_factory.mktemp("console"))
    log = workdir / "console.log"
    (workdir / "idp-ca.crt").write_text(oidc_provider.ca_pem)
    env = dict(
        os.environ,
        KUBEPAM_CONSOLE_BROKER=operator.url,
        KUBEPAM_LOG_LEVEL="INFO",
        # the tests' many refused sign-ins all come from 127.0.0.1 (the limit itself: test_console_http.py)
        KUBEPAM_CONSOLE_SIGNIN_BURST="1000",
        # sign-in with the local identity provider the API server trusts (authorization code + PKCE)
        KUBEPAM_CONSOLE_OIDC_ISSUER=oidc_provider.issuer,
        KUBEPAM_CONSOLE_OIDC_CLIENT_ID=OIDC_CLIENT_ID,
        KUBEPAM_CONSOLE_OIDC_REDIRECT_URL=f"http://127.0.0.1:{port}/login/callback",
        KUBEPAM_CONSOLE_OIDC_CA_FILE=str(workdir / "idp-ca.crt"),
    )
    proc, url = start_console(plane, port, env, log)
    try:
        yield ConsoleServer(url, plane, log, oidc_provider)
    finally:
        stop_console(proc)
