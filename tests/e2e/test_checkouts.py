"""Shared accounts on the real control plane and a real PostgreSQL: exclusive checkout decided by the
API server, credential readable by the holder alone, rotation on expiry and forced check-in (psql
proves it), early check-in without rotation, elevation with approval enforced by the API server,
outages of PostgreSQL and of the operator itself."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from kubepam.domain.ownership import derived_name, qualified
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

NS = "accounts"
ACCOUNT = "app_admin"  # a PostgreSQL role shared by the team
OPS = "ops_shared"  # a kubernetes-backend account (the Secret is the credential)


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def pg(plane: ControlPlane, operator: OperatorProcess) -> Iterator[LocalPostgres]:
    server = LocalPostgres()
    server.init()
    server.start()
    server.sql(f"CREATE ROLE {ACCOUNT} LOGIN PASSWORD 'set-by-the-dba'")
    server.sql("CREATE ROLE app_owner NOLOGIN")
    team_namespace(plane, NS)
    postgres_admin_secret(plane, NS, server.password, server.port)
    postgres_ca_configmap(plane, NS, server.ca_pem)
    apply(
        plane,
        "devops",
        obj(
            "Project",
            "db",
            {
                "sharedAccounts": [
                    {
                        "name": ACCOUNT,
                        "backend": "postgresql",
                        "postgresql": {
                            "host": "127.0.0.1",
                            "port": server.port,
                            "adminSecretRef": {"name": "pg-admin"},
                            "caConfigMapRef": {"name": "pg-ca-bundle"},
                        },
                    }
                ]
            },
        ),
        obj("Project", "ops", {"sharedAccounts": [{"name": OPS, "backend": "kubernetes"}]}),
        obj(
            "CheckoutPolicy",
            "db",
            {
                "project": "db",
                "maxDuration": "30m",
                "elevation": {
                    "eligibleAccounts": [ACCOUNT],
                    "privilegedGroups": ["app_owner"],
                    "approvalWindow": "10s",
                    "approvers": {"groups": ["kubepam:approvers"]},
                },
            },
        ),
        obj(
            "CheckoutPolicy",
            "ops",
            {
                "project": "ops",
                "maxDuration": "30m",
                "elevation": {
                    "eligibleAccounts": [OPS],
                    "privilegedGroups": ["view"],
                    "approvalWindow": "1h",
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
                        "projects": ["db", "ops"],
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
    for project in ("db", "ops"):
        assert wait_for(plane, "devops", f"project/{project}", "condition=Ready", NS).returncode == 0
    for policy in ("db", "ops"):
        assert wait_for(plane, "devops", f"checkoutpolicy/{policy}", "condition=Ready", NS).returncode == 0
    try:
        yield server
    finally:
        server.remove()


def checkout(
    plane: ControlPlane,
    who: str,
    name: str,
    account: str = ACCOUNT,
    project: str = "db",
    check: bool = True,
    **spec: Any,
) -> subprocess.CompletedProcess[str]:
    body = obj(
        "Checkout",
        name,
        {"project": project, "account": account, "requester": who, "reason": f"test by {who}", **spec},
    )
    return apply(plane, who, body, check=check)


def status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return kubectl_json(plane, "admin", "get", "checkout", name, "-n", NS).get("status") or {}


def wait_phase(
    plane: ControlPlane, name: str, phases: tuple[str, ...], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(plane, name)
        if current.get("phase") in phases or time.monotonic() > deadline:
            assert current.get("phase") in phases, current
            return current
        time.sleep(0.2)


def wait_elevation(plane: ControlPlane, name: str, state: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(plane, name)
        if (current.get("elevation") or {}).get("state") == state or time.monotonic() > deadline:
            assert (current.get("elevation") or {}).get("state") == state, current
            return current
        time.sleep(0.2)


def credential_secret(plane: ControlPlane, checkout: str) -> str:
    """The holder's credential Secret, as the checkout's status names it (derived from its uid)."""
    obj = kubectl_json(plane, "admin", "get", "checkout", checkout, "-n", NS)
    assert obj["status"]["secretName"] == f"kubepam-checkout-{checkout}-{obj['metadata']['uid']}"
    return str(obj["status"]["secretName"])


def secret_password(plane: ControlPlane, who: str, checkout: str) -> str:
    data = kubectl_json(plane, who, "get", "secret", credential_secret(plane, checkout), "-n", NS)["data"]
    return base64.b64decode(data["password"]).decode()


def account_secret(plane: ControlPlane, project: str = "db", account: str = ACCOUNT) -> dict[str, str]:
    uid = kubectl_json(plane, "admin", "get", "project", project, "-n", NS)["metadata"]["uid"]
    name = qualified(derived_name("account", project, uid), account)
    data = kubectl_json(plane, "admin", "get", "secret", name, "-n", NS)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def checkin(
    plane: ControlPlane, who: str, name: str, force: bool = False
) -> subprocess.CompletedProcess[str]:
    patch = {"spec": {"checkin": {"force": True} if force else {"requested": True}}}
    return plane.kubectl(
        who, "patch", "checkout", name, "-n", NS, "--type=merge", "-p", json.dumps(patch), check=False
    )


def test_after_expiry_the_old_password_fails_and_the_new_one_works(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    checkout(plane, "alice", "alice-1", duration="10s")
    active = wait_phase(plane, "alice-1", ("Active",))
    assert active["holder"] == "alice"
    secret = credential_secret(plane, "alice-1")
    old = secret_password(plane, "alice", "alice-1")
    assert old != "set-by-the-dba" and pg.psql_login(ACCOUNT, old)  # kubepam took over the account's password
    done = wait_phase(plane, "alice-1", ("Expired",), timeout=40)
    assert done["checkinReason"] == "Expired" and done["rotation"]["completedAt"]
    assert not pg.psql_login(ACCOUNT, old), "the old password must no longer log in"
    new = account_secret(plane)["password"]
    assert new != old and pg.psql_login(ACCOUNT, new)
    gone = plane.kubectl("alice", "get", "secret", secret, "-n", NS, check=False)
    assert gone.returncode != 0  # the credential Secret is removed at check-in


def test_early_checkin_frees_the_account_without_rotation(plane: ControlPlane, pg: LocalPostgres) -> None:
    checkout(plane, "alice", "alice-2")
    wait_phase(plane, "alice-2", ("Active",))
    password = secret_password(plane, "alice", "alice-2")
    checkout(plane, "bob", "bob-2")
    denied = wait_phase(plane, "bob-2", ("Denied",))
    assert (
        f"account {ACCOUNT} is checked out by alice until" in denied["message"]
        and "left)" in denied["message"]
    )
    refused = checkin(plane, "bob", "alice-2")
    assert refused.returncode != 0 and "only the requester (alice) or a security admin" in refused.stderr
    assert checkin(plane, "alice", "alice-2").returncode == 0
    done = wait_phase(plane, "alice-2", ("CheckedIn",))
    assert done["checkinReason"] == "User" and not done["rotation"]["required"]
    assert pg.psql_login(ACCOUNT, password), "a holder's own check-in does not rotate (Okta's default)"
    checkout(plane, "bob", "bob-2b")
    assert wait_phase(plane, "bob-2b", ("Active",))["holder"] == "bob"
    forbidden = checkin(plane, "bob", "bob-2b", force=True)
    assert (
        forbidden.returncode != 0 and "only kubepam:security-admins may force a check-in" in forbidden.stderr
    )
    assert checkin(plane, "secadmin", "bob-2b", force=True).returncode == 0
    forced = wait_phase(plane, "bob-2b", ("CheckedIn",))
    assert forced["checkinReason"] == "Forced" and forced["rotation"]["completedAt"]
    assert not pg.psql_login(ACCOUNT, password), "a forced check-in rotates"
    assert pg.psql_login(ACCOUNT, account_secret(plane)["password"])


def test_fifty_simultaneous_checkouts_one_wins_and_only_the_holder_reads_the_secret(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    users = [f"user-{i:02d}" for i in range(50)]

    def attempt(user: str) -> subprocess.CompletedProcess[str]:
        body = obj(
            "Checkout",
            f"race-{user}",
            {"project": "ops", "account": OPS, "requester": user, "reason": "race"},
        )
        return plane.kubectl(
            "admin",
            "create",
            "-f",
            "-",
            "--as",
            user,
            "--as-group",
            "kubepam:users",
            "--as-group",
            "system:authenticated",
            input_text=json.dumps(body),
            check=False,
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(attempt, users))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    final = {user: wait_phase(plane, f"race-{user}", ("Active", "Denied")) for user in users}
    winners = [u for u, s in final.items() if s["phase"] == "Active"]
    assert len(winners) == 1, winners
    holder = winners[0]
    for user, st in final.items():
        if user != holder:
            assert st["phase"] == "Denied" and f"checked out by {holder} until" in st["message"], (user, st)
    secret = final[holder]["secretName"]
    other = next(u for u in users if u != holder)
    can = plane.kubectl(
        "admin", "auth", "can-i", "get", f"secret/{secret}", "-n", NS, "--as", other, check=False
    )
    assert can.stdout.strip() == "no"
    mine = plane.kubectl(
        "admin", "auth", "can-i", "get", f"secret/{secret}", "-n", NS, "--as", holder, check=False
    )
    assert mine.stdout.strip() == "yes"
    read = plane.kubectl(
        "admin", "get", "secret", secret, "-n", NS, "--as", other, "--as-group", "kubepam:users", check=False
    )
    assert read.returncode != 0 and "Forbidden" in read.stderr
    assert plane.kubectl("bob", "get", "secret", secret, "-n", NS, check=False).returncode != 0
    held = plane.kubectl(
        "admin",
        "get",
        "secret",
        secret,
        "-n",
        NS,
        "-o",
        "jsonpath={.data.password}",
        "--as",
        holder,
        "--as-group",
        "kubepam:users",
    )
    assert base64.b64decode(held.stdout).decode() == account_secret(plane, "ops", OPS)["password"]
    assert checkin(plane, "secadmin", f"race-{holder}", force=True).returncode == 0
    wait_phase(plane, f"race-{holder}", ("CheckedIn",))


def test_elevation_needs_an_approver_who_is_not_the_requester_and_ends_with_its_window(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    checkout(plane, "alice", "alice-elev", elevation={"requested": True})
    wait_phase(plane, "alice-elev", ("Active",))
    wait_elevation(plane, "alice-elev", "PENDING")
    assert "app_owner" not in pg.member_of(ACCOUNT)
    request = status(plane, "alice-elev")["approvalRequest"]
    assert request["id"] == "elevation-1" and request["state"] == "Pending"

    def approve(decision: str = "Approved") -> list[str]:
        vote = {"request": "elevation-1", "decision": decision, "approver": "alice"}
        patch = [{"op": "add", "path": "/status/approvals/-", "value": vote}]
        return [
            "patch",
            "checkout",
            "alice-elev",
            "-n",
            NS,
            "--subresource=status",
            "--type=json",
            "-p",
            json.dumps(patch),
        ]

    own = plane.kubectl("alice", *approve(), check=False)
    assert own.returncode != 0 and "Forbidden" in own.stderr  # RBAC: users cannot write status at all
    plane.kubectl(
        "admin",
        "create",
        "clusterrolebinding",
        "alice-also-approver",
        "--clusterrole=kubepam-approver",
        "--user=alice",
        check=False,
    )
    own = plane.kubectl("admin", *approve(), "--as", "alice", "--as-group", "kubepam:approvers", check=False)
    assert own.returncode != 0 and "the requester cannot approve or deny their own request" in own.stderr
    meddling = plane.kubectl(
        "approver",
        "patch",
        "checkout",
        "alice-elev",
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"CheckedIn"}}',
        check=False,
    )
    assert meddling.returncode != 0 and "people may only append to status.approvals" in meddling.stderr
    ok = plane.kubectl("approver", *approve(), check=False)
    assert ok.returncode == 0, ok.stderr
    (vote,) = status(plane, "alice-elev")["approvals"]
    assert vote["approver"] == "approver"  # stamped by the API server, not the client's "alice"
    elevated = wait_elevation(plane, "alice-elev", "ELEVATED")
    assert "app_owner" in pg.member_of(ACCOUNT)
    assert elevated["elevation"]["expiresAt"]
    wait_elevation(plane, "alice-elev", "REMOVED", timeout=40)  # the 10 s approval window ran out
    assert "app_owner" not in pg.member_of(ACCOUNT)
    again = plane.kubectl("april", *approve("Denied"), check=False)
    assert again.returncode != 0 and "nothing to approve: request elevation-1 is Approved" in again.stderr
    assert checkin(plane, "alice", "alice-elev").returncode == 0
    wait_phase(plane, "alice-elev", ("CheckedIn",))


def test_postgres_down_keeps_the_account_locked_until_rotation_succeeds(
    plane: ControlPlane, pg: LocalPostgres
) -> None:
    checkout(plane, "alice", "alice-outage", duration="10s")
    wait_phase(plane, "alice-outage", ("Active",))
    old = secret_password(plane, "alice", "alice-outage")
    pg.stop()
    try:
        stuck = wait_phase(plane, "alice-outage", ("CheckinInProgress",), timeout=40)
        deadline = time.monotonic() + 30
        while not (stuck.get("rotation") or {}).get("lastError") and time.monotonic() < deadline:
            time.sleep(0.3)
            stuck = status(plane, "alice-outage")
        assert "postgresql 127.0.0.1" in stuck["rotation"]["lastError"] and stuck["rotation"]["attempts"] >= 1
        checkout(plane, "bob", "bob-outage")
        assert wait_phase(plane, "bob-outage", ("Denied",))["message"] == (
            f"account {ACCOUNT} is locked until its password rotation completes (alice's checkout has ended)"
        )  # still locked, and says why (not "until <a time in the past> (0s left)")
        events = plane.kubectl(
            "admin",
            "get",
            "events.events.k8s.io",
            "-n",
            NS,
            "--field-selector",
            "regarding.name=alice-outage",
            "-o",
            "json",
        ).stdout
        assert "RetryScheduled" in events
    finally:
        pg.start()
    wait_phase(plane, "alice-outage", ("Expired",), timeout=90)
    assert not pg.psql_login(ACCOUNT, old) and pg.psql_login(ACCOUNT, account_secret(plane)["password"])
    checkout(plane, "bob", "bob-after-outage")
    assert wait_phase(plane, "bob-after-outage", ("Active",))["holder"] == "bob"
    checkin(plane, "bob", "bob-after-outage")
    wait_phase(plane, "bob-after-outage", ("CheckedIn",))


def test_operator_killed_mid_rotation_finishes_once_loses_no_expiry_and_leaves_nothing_elevated(
    plane: ControlPlane, operator: OperatorProcess, pg: LocalPostgres
) -> None:
    checkout(plane, "alice", "alice-crash", duration="15s", elevation={"requested": True})
    wait_elevation(plane, "alice-crash", "PENDING")
    plane.kubectl(
        "approver",
        "patch",
        "checkout",
        "alice-crash",
        "-n",
        NS,
        "--subresource=status",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/status/approvals/-","value":{"request":"elevation-1","decision":"Approved"}}]',
    )
    wait_elevation(plane, "alice-crash", "ELEVATED")
    checkout(plane, "bob", "bob-ops", account=OPS, project="ops", duration="10s")
    wait_phase(plane, "bob-ops", ("Active",))
    old = secret_password(plane, "alice", "alice-crash")
    rotations_before = int(account_secret(plane).get("rotations", "0"))
    pg.stop()
    try:
        wait_phase(plane, "alice-crash", ("CheckinInProgress",), timeout=40)
        time.sleep(2)  # a failed attempt or two: intent recorded, nothing released
        pending = account_secret(plane).get("pending-password")
        assert operator.proc is not None
        operator.stop(sig=signal.SIGKILL)  # killed mid-rotation
        time.sleep(11)  # bob-ops expires while no operator runs
    finally:
        pg.start()
    operator.start()
    done = wait_phase(plane, "alice-crash", ("Expired",), timeout=90)
    assert done["elevation"]["state"] == "REMOVED" and "app_owner" not in pg.member_of(ACCOUNT)
    after = account_secret(plane)
    assert "pending-password" not in after
    if pending is not None:
        assert (
            after["password"] == pending
        )  # the rotation recorded before the crash is the one that completed
    assert int(after["rotations"]) == rotations_before + 1  # exactly once
    assert not pg.psql_login(ACCOUNT, old) and pg.psql_login(ACCOUNT, after["password"])
    assert wait_phase(plane, "bob-ops", ("Expired",), timeout=30)["checkinReason"] == "Expired"  # not lost


def test_cli_checkout_checkin_and_listing(plane: ControlPlane, pg: LocalPostgres, tmp_path: Path) -> None:
    env = {**__import__("os").environ, "KUBECONFIG": str(plane.kubeconfig("alice"))}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubepam",
            "checkout",
            OPS,
            "--project",
            "ops",
            "-n",
            NS,
            "--reason",
            "INC-7",
            "--show",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    name = out.stdout.split(":")[0]
    assert f"{OPS} is yours until" in out.stdout and "password: " in out.stdout
    admin_env = {**env, "KUBECONFIG": str(plane.kubeconfig("secadmin"))}
    listing = subprocess.run(
        [sys.executable, "-m", "kubepam", "checkouts", "-n", NS],
        capture_output=True,
        text=True,
        env=admin_env,
        timeout=60,
    )
    assert listing.returncode == 0 and any(
        name in line and "alice" in line and "Active" in line for line in listing.stdout.splitlines()
    ), listing.stdout
    back = subprocess.run(
        [sys.executable, "-m", "kubepam", "checkin", name, "-n", NS],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert back.returncode == 0, back.stderr
    wait_phase(plane, name, ("CheckedIn",))
