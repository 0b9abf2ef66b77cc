"""Security (issue 9, path 3): backend admin credentials go only where a security admin pinned them.

Acted out with kubectl on the real control plane: dana (a DevOps admin, who may edit Projects but not
read or write Secrets and ConfigMaps) points a PostgreSQL backend at a listener of her own while the
admin Secret is the real one; victor (a plain user) then checks the account out or creates a JIT
account, which is when the operator would connect. The operator must refuse with a clear status and
send nothing: the listeners record every byte. Also refused: an allowed host whose certificate is not
signed by the referenced CA, one that asks for a cleartext password, and a Secret without the
kubepam.io/allowed-hosts annotation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    kubectl_json,
    postgres_admin_secret,
    postgres_ca_configmap,
    team_namespace,
    wait_for,
)
from tests.postgres import LocalPostgres
from tests.rogue_postgres import AUTH_CLEARTEXT, RoguePostgres
from tests.tls import TestCA

pytestmark = pytest.mark.e2e

NS = "sec-pinning"
ACCOUNT = "pin_app"
ANNOTATION = "kubepam.io/allowed-hosts"


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def backend(port: int, secret: str = "pg-admin") -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "adminSecretRef": {"name": secret},
        "caConfigMapRef": {"name": "pg-ca-bundle"},
    }


@pytest.fixture(scope="module")
def pg(plane: ControlPlane, operator: OperatorProcess) -> Iterator[LocalPostgres]:
    """The real server, its annotated admin Secret and its CA, set up by the cluster admin; and an
    AccessPolicy that lets users check out accounts of every project here."""
    server = LocalPostgres()
    server.init()
    server.start()
    server.sql(f"CREATE ROLE {ACCOUNT} LOGIN PASSWORD 'set-by-the-dba'")
    server.sql("CREATE ROLE pin_reader NOLOGIN")
    team_namespace(plane, NS)
    postgres_admin_secret(plane, NS, server.password, server.port)
    postgres_ca_configmap(plane, NS, server.ca_pem)
    apply(
        plane,
        "dana",
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "shared", "projects": ["*"], "accounts": ["*"]}],
            },
        ),
    )
    try:
        yield server
    finally:
        server.remove()


def dana_points_a_project_at(plane: ControlPlane, project: str, settings: dict[str, Any]) -> None:
    """dana's whole attack: a Project (first at the real server) whose backend she then moves."""
    apply(
        plane,
        "dana",
        obj("CheckoutPolicy", project, {"project": project, "maxDuration": "30m"}),
        obj(
            "Project",
            project,
            {"sharedAccounts": [{"name": ACCOUNT, "backend": "postgresql", "postgresql": settings}]},
        ),
    )
    assert wait_for(plane, "dana", f"project/{project}", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "dana", f"checkoutpolicy/{project}", "condition=Ready", NS).returncode == 0


def wait_status(
    plane: ControlPlane, kind: str, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = kubectl_json(plane, "admin", "get", kind, name, "-n", NS).get("status") or {}
        if done(current) or time.monotonic() > deadline:
            assert done(current), current
            return current
        time.sleep(0.3)


def victor_checks_out(plane: ControlPlane, name: str, project: str, says: str) -> dict[str, Any]:
    apply(
        plane,
        "victor",
        obj("Checkout", name, {"project": project, "account": ACCOUNT, "reason": "INC-7 look at orders"}),
    )
    status = wait_status(plane, "checkout", name, lambda s: says in (s.get("message") or ""))
    time.sleep(3)  # a few retries (1 s, 2 s) go by: they must not connect either
    status = kubectl_json(plane, "admin", "get", "checkout", name, "-n", NS).get("status") or {}
    assert status.get("phase") != "Active" and not status.get("secretName"), status
    assert says in status.get("message", ""), status
    return status


def cleanup(plane: ControlPlane, *what: str) -> None:
    for item in what:
        plane.kubectl("admin", "delete", "-n", NS, item, "--wait=false", "--ignore-not-found", check=False)


def test_dana_cannot_write_or_read_what_pins_a_backend(plane: ControlPlane, pg: LocalPostgres) -> None:
    for verb, resource in (
        ("get", "secrets"),
        ("patch", "secrets"),
        ("create", "secrets"),
        ("patch", "configmaps"),
    ):
        answer = plane.kubectl("dana", "auth", "can-i", verb, resource, "-n", NS, check=False).stdout.strip()
        assert answer == "no", (verb, resource)
    refused = plane.kubectl(
        "dana",
        "annotate",
        "secret",
        "pg-admin",
        "-n",
        NS,
        f"{ANNOTATION}=127.0.0.1:1",
        "--overwrite",
        check=False,
    )
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()


def test_a_shared_account_moved_to_another_host_gets_no_connection(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    with RoguePostgres(tls=None) as rogue:
        dana_points_a_project_at(plane, "moved", backend(pg.port))
        plane.kubectl(
            "dana",
            "patch",
            "project",
            "moved",
            "-n",
            NS,
            "--type=json",
            "-p",
            f'[{{"op":"replace","path":"/spec/sharedAccounts/0/postgresql/port","value":{rogue.port}}}]',
        )
        status = victor_checks_out(plane, "victor-moved", "moved", "is not allowed")
        assert (
            f"host 127.0.0.1:{rogue.port} is not allowed for admin Secret {NS}/pg-admin" in status["message"]
        )
        assert ANNOTATION in status["message"]
    assert rogue.seen.connections == 0 and rogue.seen.bytes_received == 0
    cleanup(plane, "checkout/victor-moved", "project/moved", "checkoutpolicy/moved")


def test_a_jit_backend_moved_to_another_host_gets_no_connection(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    with RoguePostgres(tls=None) as rogue:
        apply(
            plane,
            "dana",
            obj(
                "Project",
                "jit-moved",
                {
                    "jit": {
                        "enabled": True,
                        "backend": "postgresql",
                        "allowedGroups": ["pin_reader"],
                        "creators": {"groups": ["kubepam:users"]},
                        "maxDuration": "1h",
                        "postgresql": backend(rogue.port),
                    }
                },
            ),
        )
        assert wait_for(plane, "dana", "project/jit-moved", "condition=Ready", NS).returncode == 0
        deadline = time.monotonic() + 30  # the project's JIT settings become the admission parameters
        created = None
        while time.monotonic() < deadline:
            created = apply(
                plane,
                "victor",
                obj(
                    "JitAccount",
                    "victor-pin",
                    {
                        "project": "jit-moved",
                        "owner": "victor",
                        "groups": ["pin_reader"],
                        "reason": "CHG-9 read the orders table",
                        "duration": "10m",
                    },
                ),
                check=False,
            )
            if created.returncode == 0:
                break
            time.sleep(0.5)
        assert created is not None and created.returncode == 0, created.stderr
        status = wait_status(
            plane, "jitaccount", "victor-pin", lambda s: "is not allowed" in (s.get("message") or "")
        )
        time.sleep(3)
        status = kubectl_json(plane, "admin", "get", "jitaccount", "victor-pin", "-n", NS).get("status") or {}
        assert status.get("phase") != "Active" and not status.get("secretName"), status
        assert (
            f"host 127.0.0.1:{rogue.port} is not allowed for admin Secret {NS}/pg-admin" in status["message"]
        )
    assert rogue.seen.connections == 0 and rogue.seen.bytes_received == 0
    # Put the backend back where it is pinned so the JitAccount's finalizer can run, then clean up.
    plane.kubectl(
        "admin",
        "patch",
        "project",
        "jit-moved",
        "-n",
        NS,
        "--type=json",
        "-p",
        f'[{{"op":"replace","path":"/spec/jit/postgresql/port","value":{pg.port}}}]',
    )
    cleanup(plane, "jitaccount/victor-pin")
    plane.kubectl(
        "admin", "wait", "--for=delete", "jitaccount/victor-pin", "-n", NS, "--timeout=60s", check=False
    )
    cleanup(plane, "project/jit-moved")


def test_an_allowed_host_with_a_certificate_from_another_ca_gets_no_password(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    with RoguePostgres(tls=TestCA("an impostor's CA").server()) as rogue:
        # A security admin allowed this host:port (say, a name someone later took over).
        postgres_admin_secret(plane, NS, pg.password, rogue.port, name="pg-admin-impostor")
        dana_points_a_project_at(plane, "impostor", backend(rogue.port, "pg-admin-impostor"))
        status = victor_checks_out(plane, "victor-impostor", "impostor", "certificate verify failed")
    assert rogue.seen.ssl_requests >= 1 and rogue.seen.handshakes == 0 and rogue.seen.handshake_errors
    assert rogue.seen.startups == 0 and rogue.seen.passwords == [], rogue.seen
    assert pg.password not in status["message"]
    cleanup(
        plane,
        "checkout/victor-impostor",
        "project/impostor",
        "checkoutpolicy/impostor",
        "secret/pg-admin-impostor",
    )


def test_an_allowed_host_asking_for_a_cleartext_password_gets_none(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    # Even with a certificate the referenced CA signed, only SCRAM is spoken (require_auth).
    with RoguePostgres(tls=pg.ca.server(), auth=AUTH_CLEARTEXT) as rogue:
        postgres_admin_secret(plane, NS, pg.password, rogue.port, name="pg-admin-cleartext")
        dana_points_a_project_at(plane, "cleartext", backend(rogue.port, "pg-admin-cleartext"))
        victor_checks_out(
            plane, "victor-cleartext", "cleartext", 'authentication method requirement "scram-sha-256"'
        )
    assert rogue.seen.handshakes >= 1 and rogue.seen.startups >= 1  # it got as far as asking
    assert rogue.seen.passwords == []
    cleanup(
        plane,
        "checkout/victor-cleartext",
        "project/cleartext",
        "checkoutpolicy/cleartext",
        "secret/pg-admin-cleartext",
    )


def test_an_admin_secret_without_the_annotation_is_never_used(plane: ControlPlane, pg: LocalPostgres) -> None:
    with RoguePostgres(tls=None) as rogue:
        postgres_admin_secret(plane, NS, pg.password, None, name="pg-admin-bare")
        dana_points_a_project_at(plane, "bare", backend(rogue.port, "pg-admin-bare"))
        status = victor_checks_out(plane, "victor-bare", "bare", f"has no annotation {ANNOTATION}")
        assert f"admin Secret {NS}/pg-admin-bare" in status["message"]
    assert rogue.seen.connections == 0
    cleanup(plane, "checkout/victor-bare", "project/bare", "checkoutpolicy/bare", "secret/pg-admin-bare")
