"""JIT accounts on the real control plane and a real PostgreSQL: during the window the token can do
exactly what its groups allow and nothing else; after the window the API server refuses that token;
re-enabling gives a new token while the old stays dead; PostgreSQL logins follow the window; the API
server refuses wrong owners, creators, names, groups, reasons and durations, each with its message."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
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

NS = "jit"
TARGET = "jit-target"  # where the account's groups apply (never NS, which holds the project's keys)
SECOND = "jit-second"  # a second namespace where they also apply
ELSEWHERE = "jit-elsewhere"


def obj(kind: str, name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def jit_spec(owner: str = "alice", project: str = "k8s", **extra: Any) -> dict[str, Any]:
    return {
        "project": project,
        "owner": owner,
        "groups": ["view"],
        "reason": "CHG-100 look at the rollout",
        "duration": "1m",
        **extra,
    }


@pytest.fixture(scope="module")
def env(plane: ControlPlane, operator: OperatorProcess) -> Iterator[LocalPostgres]:
    pg = LocalPostgres()
    pg.init()
    pg.start()
    pg.sql("CREATE ROLE app_reader NOLOGIN")
    for ns in (NS, TARGET, SECOND, ELSEWHERE):
        team_namespace(plane, ns)
    postgres_admin_secret(plane, NS, pg.password, pg.port)
    postgres_ca_configmap(plane, NS, pg.ca_pem)
    apply(
        plane,
        "devops",
        obj(
            "Project",
            "k8s",
            {
                "jit": {
                    "enabled": True,
                    "backend": "kubernetes",
                    "allowedGroups": ["view", "edit"],
                    "creators": {"groups": ["kubepam:users"]},
                    "maxDuration": "2h",
                    "namespaces": [TARGET, SECOND],
                }
            },
        ),
        obj(
            "Project",
            "pg",
            {
                "jit": {
                    "enabled": True,
                    "backend": "postgresql",
                    "allowedGroups": ["app_reader"],
                    "creators": {"groups": ["kubepam:users"]},
                    "maxDuration": "1h",
                    "postgresql": {
                        "host": "127.0.0.1",
                        "port": pg.port,
                        "adminSecretRef": {"name": "pg-admin"},
                        "caConfigMapRef": {"name": "pg-ca-bundle"},
                    },
                }
            },
        ),
        obj(
            "Project",
            "locked",
            {
                "jit": {
                    "enabled": True,
                    "allowedGroups": ["view"],
                    "creators": {"groups": ["kubepam:devops-admins"]},
                    "namespaces": [TARGET],
                }
            },
        ),
    )
    for project in ("k8s", "pg", "locked"):
        assert wait_for(plane, "devops", f"project/{project}", "condition=Ready", NS).returncode == 0
    deadline = time.monotonic() + 20  # the projects' JIT settings ConfigMaps become the admission parameters
    while time.monotonic() < deadline:
        names = plane.kubectl(
            "admin", "get", "configmap", "-n", NS, "-l", "kubepam.io/jit-settings=true", "-o", "name"
        ).stdout.split()
        if len(names) == 3:
            break
        time.sleep(0.2)
    time.sleep(1)
    try:
        yield pg
    finally:
        pg.remove()


def status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return kubectl_json(plane, "admin", "get", "jitaccount", name, "-n", NS).get("status") or {}


def wait_phase(
    plane: ControlPlane, name: str, phase: str, timeout: float = 90, generation: int | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(plane, name)
        fits = current.get("phase") == phase and (
            generation is None or current.get("activatedGeneration") == generation
        )
        if fits or time.monotonic() > deadline:
            assert fits, current
            return current
        time.sleep(0.3)


def secret_data(plane: ControlPlane, who: str, secret: str) -> dict[str, str]:
    data = kubectl_json(plane, who, "get", "secret", secret, "-n", NS)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def with_token(plane: ControlPlane, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        plane.binary("kubectl"),
        "--kubeconfig=/dev/null",
        f"--server={plane.server}",
        f"--certificate-authority={plane.state_dir / 'pki' / 'ca.crt'}",
        f"--token={token}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def can(plane: ControlPlane, token: str, verb: str, resource: str, namespace: str) -> str:
    return (
        with_token(plane, token, "auth", "can-i", verb, resource, "-n", namespace).stdout.strip() or "error"
    )


@pytest.mark.parametrize(
    ("who", "name", "spec", "message"),
    [
        (
            "alice",
            "for-bob",
            jit_spec(owner="bob"),
            "spec.owner must be you (alice); only kubepam:security-admins create JIT accounts for others",
        ),
        (
            "alice",
            "locked-out",
            jit_spec(project="locked"),
            "alice may not create JIT accounts in project locked (creators: kubepam:devops-admins)",
        ),
        (
            "alice",
            "long-name",
            jit_spec(accountName="alexandrina_longe_jit"),
            "spec.accountName: Too long: may not be more than 20",
        ),
        (
            "secadmin",
            "long-owner",
            jit_spec(owner="alexandrina_longe"),
            "the account name (spec.accountName, or <owner>_jit) must be at most 20 characters",
        ),
        (
            "alice",
            "bad-group",
            jit_spec(groups=["cluster-admin"]),
            "spec.groups: cluster-admin not in project k8s allowed JIT groups (view,edit)",
        ),
        (
            "alice",
            "no-reason",
            {k: v for k, v in jit_spec().items() if k != "reason"},
            "spec.reason: Required value",
        ),
        (
            "alice",
            "too-long",
            jit_spec(duration="3h"),
            "spec.duration 3h exceeds the maximum of project k8s (2h)",
        ),
    ],
)
def test_the_api_server_refuses_each_wrong_request_with_its_own_message(
    plane: ControlPlane, env: LocalPostgres, who: str, name: str, spec: dict[str, Any], message: str
) -> None:
    result = apply(plane, who, obj("JitAccount", name, spec), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert plane.kubectl("admin", "get", "jitaccount", name, "-n", NS, check=False).returncode != 0


def test_a_security_admin_may_create_one_for_someone_else(plane: ControlPlane, env: LocalPostgres) -> None:
    apply(plane, "secadmin", obj("JitAccount", "bob", jit_spec(owner="bob", duration="10m")))
    active = wait_phase(plane, "bob", "Active")
    assert active["accountName"] == "bob_jit" and active["history"][-1]["by"] == "secadmin"
    # The finalizer stays and the object is still: no replica's watch-only kopf fights the leader's over it
    # (it did once: a view index on JitAccounts removed it ~100 times a second).
    before = kubectl_json(plane, "admin", "get", "jitaccount", "bob", "-n", NS)["metadata"]
    time.sleep(2)
    after = kubectl_json(plane, "admin", "get", "jitaccount", "bob", "-n", NS)["metadata"]
    assert "kubepam.io/finalizer" in after["finalizers"]
    assert after["resourceVersion"] == before["resourceVersion"], "the JitAccount kept changing at rest"
    assert plane.kubectl("bob", "get", "secret", active["secretName"], "-n", NS, check=False).returncode == 0
    assert (
        plane.kubectl("alice", "get", "secret", active["secretName"], "-n", NS, check=False).returncode != 0
    )
    plane.kubectl("secadmin", "delete", "jitaccount", "bob", "-n", NS)
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and plane.kubectl("admin", "get", "serviceaccount", "bob-jit", "-n", NS, check=False).returncode == 0
    ):
        time.sleep(0.3)
    assert plane.kubectl("admin", "get", "serviceaccount", "bob-jit", "-n", NS, check=False).returncode != 0


def test_kubernetes_jit_token_follows_its_window(plane: ControlPlane, env: LocalPostgres) -> None:
    apply(plane, "alice", obj("JitAccount", "alice", jit_spec()))
    active = wait_phase(plane, "alice", "Active")
    secret = active["secretName"]
    uid = kubectl_json(plane, "admin", "get", "jitaccount", "alice", "-n", NS)["metadata"]["uid"]
    assert active["accountName"] == "alice_jit" and secret == f"kubepam-jit-alice-{uid}"
    token = secret_data(plane, "alice", secret)["token"]
    assert secret_data(plane, "alice", secret)["serviceAccount"] == f"system:serviceaccount:{NS}:alice-jit"
    # exactly what view allows, where the project binds it, and nothing else
    assert can(plane, token, "list", "pods", TARGET) == "yes"
    assert can(plane, token, "list", "pods", SECOND) == "yes"
    assert can(plane, token, "list", "pods", ELSEWHERE) == "no"
    assert can(plane, token, "list", "pods", NS) == "no"  # the namespace of the keys and passwords
    assert can(plane, token, "delete", "pods", TARGET) == "no"
    assert can(plane, token, "get", "secrets", NS) == "no"
    assert can(plane, token, "create", "jitaccounts.kubepam.io", NS) == "no"
    assert with_token(plane, token, "get", "configmaps", "-n", TARGET).returncode == 0
    assert plane.kubectl("bob", "get", "secret", secret, "-n", NS, check=False).returncode != 0

    disabled = wait_phase(plane, "alice", "Disabled", timeout=120)
    assert "give a new reason" in disabled["message"]
    refused = with_token(plane, token, "get", "configmaps", "-n", TARGET)
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr
    events = plane.kubectl(
        "admin",
        "get",
        "events.events.k8s.io",
        "-n",
        NS,
        "--field-selector",
        "regarding.name=alice",
        "-o",
        "json",
    ).stdout
    assert '"reason": "Enabled"' in events and '"reason": "Disabled"' in events

    patch = {"spec": {"duration": "2m"}}
    plane.kubectl("alice", "patch", "jitaccount", "alice", "-n", NS, "--type=merge", "-p", json.dumps(patch))
    time.sleep(2)
    same = status(plane, "alice")
    assert same["phase"] == "Disabled" and "give a new reason to re-enable" in same["message"]
    patch = {"spec": {"reason": "CHG-101 second look", "duration": "2m", "groups": ["edit"]}}
    plane.kubectl("alice", "patch", "jitaccount", "alice", "-n", NS, "--type=merge", "-p", json.dumps(patch))
    generation = kubectl_json(plane, "admin", "get", "jitaccount", "alice", "-n", NS)["metadata"][
        "generation"
    ]
    again = wait_phase(plane, "alice", "Active", generation=generation)
    new_token = secret_data(plane, "alice", again["secretName"])["token"]
    assert new_token != token
    assert can(plane, new_token, "delete", "pods", TARGET) == "yes"  # edit now
    refused = with_token(plane, token, "get", "configmaps", "-n", TARGET)
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr  # the old token stays dead
    history = again["history"]
    assert [h["reason"] for h in history] == ["CHG-100 look at the rollout", "CHG-101 second look"]
    assert history[-1]["by"] == "alice" and history[-1]["groups"] == ["edit"]


def test_the_owner_disables_an_account_before_its_window_ends(
    plane: ControlPlane, env: LocalPostgres
) -> None:
    apply(plane, "bob", obj("JitAccount", "bob", jit_spec("bob", duration="1h")))
    active = wait_phase(plane, "bob", "Active")
    token = secret_data(plane, "bob", active["secretName"])["token"]
    assert can(plane, token, "list", "pods", TARGET) == "yes"
    disable = json.dumps({"spec": {"disabled": True}})
    refused = plane.kubectl(
        "mallory", "patch", "jitaccount", "bob", "-n", NS, "--type=merge", "-p", disable, check=False
    )
    assert refused.returncode != 0 and "only the owner (bob)" in refused.stderr
    plane.kubectl("bob", "patch", "jitaccount", "bob", "-n", NS, "--type=merge", "-p", disable)
    disabled = wait_phase(plane, "bob", "Disabled", timeout=30)
    assert "disabled early" in disabled["message"]
    assert disabled["expiresAt"] < active["expiresAt"], "the window ended now, not at its planned end"
    assert can(plane, token, "list", "pods", TARGET) != "yes"  # its bindings and ServiceAccount are gone
    # Clearing the flag with the same reason does not re-enable it; a new reason does.
    same = json.dumps({"spec": {"disabled": False}})
    plane.kubectl("bob", "patch", "jitaccount", "bob", "-n", NS, "--type=merge", "-p", same)
    time.sleep(2)
    assert status(plane, "bob")["phase"] == "Disabled"
    again = json.dumps({"spec": {"disabled": False, "reason": "CHG-102 once more"}})
    plane.kubectl("bob", "patch", "jitaccount", "bob", "-n", NS, "--type=merge", "-p", again)
    generation = kubectl_json(plane, "admin", "get", "jitaccount", "bob", "-n", NS)["metadata"]["generation"]
    wait_phase(plane, "bob", "Active", generation=generation)
    # bob's account name is free again for the tests after this one
    plane.kubectl("secadmin", "delete", "jitaccount", "bob", "-n", NS, "--timeout=60s")


def test_postgresql_jit_login_follows_its_window(plane: ControlPlane, env: LocalPostgres) -> None:
    pg = env
    apply(plane, "alice", obj("JitAccount", "alice-pg", jit_spec(project="pg", groups=["app_reader"])))
    active = wait_phase(plane, "alice-pg", "Active")
    creds = secret_data(plane, "alice", active["secretName"])
    assert creds["username"] == "alice_jit" and pg.psql_login("alice_jit", creds["password"])
    assert pg.member_of("alice_jit") == {"app_reader"}
    wait_phase(plane, "alice-pg", "Disabled", timeout=120)
    assert not pg.psql_login("alice_jit", creds["password"])  # the old password
    with pg.admin() as conn:
        row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'alice_jit'").fetchone()
    assert row is not None and row[0] is False  # NOLOGIN: no password works, the new random one included
    plane.kubectl(
        "alice",
        "patch",
        "jitaccount",
        "alice-pg",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"reason":"CHG-102 data check","duration":"5m"}}',
    )
    generation = kubectl_json(plane, "admin", "get", "jitaccount", "alice-pg", "-n", NS)["metadata"][
        "generation"
    ]
    again = wait_phase(plane, "alice-pg", "Active", generation=generation)
    fresh = secret_data(plane, "alice", again["secretName"])["password"]
    assert fresh != creds["password"] and pg.psql_login("alice_jit", fresh)
    assert not pg.psql_login("alice_jit", creds["password"])
    plane.kubectl("alice", "delete", "jitaccount", "alice-pg", "-n", NS, check=False)  # alice lacks delete
    plane.kubectl("secadmin", "delete", "jitaccount", "alice-pg", "-n", NS)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with pg.admin() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'alice_jit'").fetchone() is None:
                break
        time.sleep(0.3)
    with pg.admin() as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'alice_jit'").fetchone() is None


def test_a_postgresql_role_kubepam_did_not_create_is_never_adopted(
    plane: ControlPlane, env: LocalPostgres
) -> None:
    """A DBA's role that happens to be named like a JIT account (here dba_jit) is neither given a new
    password nor disabled nor dropped, even when a security admin creates the JitAccount."""
    pg = env
    pg.sql("CREATE ROLE dba_jit LOGIN PASSWORD 'the-dbas-own'")
    apply(
        plane,
        "sonia",
        obj("JitAccount", "dba-pg", jit_spec(owner="dba", project="pg", groups=["app_reader"])),
    )
    deadline = time.monotonic() + 40
    while "refusing to adopt" not in (status(plane, "dba-pg").get("message") or ""):
        assert time.monotonic() < deadline, status(plane, "dba-pg")
        time.sleep(0.3)
    assert status(plane, "dba-pg").get("phase") != "Active"
    assert pg.can_login("dba_jit", "the-dbas-own") and pg.member_of("dba_jit") == set()
    plane.kubectl("sonia", "delete", "jitaccount", "dba-pg", "-n", NS)
    deadline = time.monotonic() + 30
    while plane.kubectl("admin", "get", "jitaccount", "dba-pg", "-n", NS, check=False).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert pg.can_login("dba_jit", "the-dbas-own")  # still there, untouched


def test_an_account_is_taken_away_after_its_project_is_gone(plane: ControlPlane, env: LocalPostgres) -> None:
    """What a window granted is recorded in status.grant before it is granted, so deleting the account
    removes its bindings and ServiceAccount even when the Project (its JIT settings) was deleted first."""
    project = {
        "jit": {
            "enabled": True,
            "allowedGroups": ["view"],
            "creators": {"groups": ["kubepam:users"]},
            "maxDuration": "2h",
            "namespaces": [ELSEWHERE],
        }
    }
    apply(plane, "devops", obj("Project", "gone", project))
    assert (
        wait_for(plane, "admin", "configmap/gone-jit", "jsonpath={.data.maxDuration}=2h", NS).returncode == 0
    )
    apply(plane, "bob", obj("JitAccount", "bob", jit_spec(owner="bob", project="gone", duration="1h")))
    active = wait_phase(plane, "bob", "Active")
    assert active["grant"] == {"backend": "kubernetes", "namespaces": [ELSEWHERE], "groups": ["view"]}
    token = secret_data(plane, "bob", active["secretName"])["token"]
    assert can(plane, token, "list", "pods", ELSEWHERE) == "yes"

    def grants() -> list[str]:
        bindings = kubectl_json(plane, "admin", "get", "rolebindings", "-n", ELSEWHERE)["items"]
        return [
            b["metadata"]["name"]
            for b in bindings
            if b["metadata"]["name"].startswith("kubepam-jitgrant-bob")
        ]

    assert len(grants()) == 1
    plane.kubectl("admin", "delete", "project", "gone", "-n", NS, "--wait=true")
    deleted = plane.kubectl("secadmin", "delete", "jitaccount", "bob", "-n", NS, "--timeout=60s", check=False)
    assert deleted.returncode == 0, deleted.stderr
    assert grants() == []  # removed by the finalizer, before the object went away
    sa = plane.kubectl("admin", "get", "serviceaccount", "bob-jit", "-n", NS, check=False)
    assert sa.returncode != 0 and "NotFound" in sa.stderr
    assert can(plane, token, "list", "pods", ELSEWHERE) != "yes"
