"""History that outlives the objects, on the real control plane: a checkout checked in, a checkout that
expires, a JIT account activation that ends and an SSH certificate issued each leave one AccessRecord
written by the operator; `kubepam history --csv` (as a security admin) lists every one of them, also
after the Checkout itself is deleted; nobody but the operator may write a record, not even to change
it; and a record past its retention is deleted by the operator (one it did not write is left alone)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from kubepam.domain import records
from tests.e2e.harness import OperatorProcess, apply, kubectl_json, team_namespace, wait_for
from tests.sshd import new_key

pytestmark = pytest.mark.e2e

NS = "history"
TARGET = "history-target"
SHARED = "hist_shared"


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def phase_of(plane: ControlPlane, kind: str, name: str) -> dict[str, Any]:
    return kubectl_json(plane, "admin", "get", kind, name, "-n", NS).get("status") or {}


def wait_phase(
    plane: ControlPlane, kind: str, name: str, phases: tuple[str, ...], timeout: float = 40
) -> None:
    deadline = time.monotonic() + timeout
    while (current := phase_of(plane, kind, name)).get("phase") not in phases:
        assert time.monotonic() < deadline, f"{kind}/{name}: {current}"
        time.sleep(0.2)


def history_cli(plane: ControlPlane, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from kubepam.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "history", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig(who))},
        check=False,
    )


def csv_rows(plane: ControlPlane, *args: str) -> list[dict[str, str]]:
    done = history_cli(plane, "secadmin", "-n", NS, "--csv", *args)
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout)))


@pytest.fixture(scope="module")
def world(
    plane: ControlPlane, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    team_namespace(plane, NS)
    team_namespace(plane, TARGET)
    apply(
        plane,
        "devops",
        obj("Project", "ops", {"sharedAccounts": [{"name": SHARED, "backend": "kubernetes"}]}),
        obj("CheckoutPolicy", "ops", {"project": "ops", "maxDuration": "30m"}),
        obj(
            "Project",
            "k8s",
            {
                "jit": {
                    "enabled": True,
                    "backend": "kubernetes",
                    "allowedGroups": ["view"],
                    "creators": {"groups": ["kubepam:users"]},
                    "maxDuration": "1h",
                    "namespaces": [TARGET],
                }
            },
        ),
        obj("Project", "web", {}),
        obj("Server", "web-1", {"project": "web", "hostname": "web-1.history.test"}),
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [
                    {"name": "shared", "projects": ["ops"], "accounts": ["*"]},
                    {"name": "ssh", "projects": ["web"], "servers": {}},
                ],
            },
        ),
    )
    for project in ("ops", "k8s", "web"):
        assert wait_for(plane, "devops", f"project/{project}", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "devops", "checkoutpolicy/ops", "condition=Ready", NS).returncode == 0
    deadline = time.monotonic() + 20  # the JIT settings ConfigMap becomes the admission parameters
    while not plane.kubectl(
        "admin", "get", "configmap", "-n", NS, "-l", "kubepam.io/jit-settings=true", "-o", "name"
    ).stdout.split():
        assert time.monotonic() < deadline, "no JIT settings ConfigMap"
        time.sleep(0.2)
    time.sleep(1)
    yield tmp_path_factory.mktemp("history")


def test_every_finished_checkout_jit_activation_and_certificate_is_in_kubepam_history(
    plane: ControlPlane, world: Path
) -> None:
    checkout = {"project": "ops", "account": SHARED, "requester": "alice", "reason": "INC-7 history"}
    apply(plane, "alice", obj("Checkout", "alice-co", {**checkout, "duration": "5m"}))
    wait_phase(plane, "checkout", "alice-co", ("Active",))
    checkin = json.dumps({"spec": {"checkin": {"requested": True}}})
    plane.kubectl("alice", "patch", "checkout", "alice-co", "-n", NS, "--type=merge", "-p", checkin)
    wait_phase(plane, "checkout", "alice-co", ("CheckedIn",))
    apply(plane, "bob", obj("Checkout", "bob-co", {**checkout, "requester": "bob", "duration": "10s"}))
    jit = {
        "project": "k8s",
        "owner": "alice",
        "groups": ["view"],
        "reason": "CHG-9 history",
        "duration": "1h",
    }
    apply(plane, "alice", obj("JitAccount", "alice", jit))
    wait_phase(plane, "jitaccount", "alice", ("Active",))
    disable = json.dumps({"spec": {"disabled": True}})
    plane.kubectl("alice", "patch", "jitaccount", "alice", "-n", NS, "--type=merge", "-p", disable)
    wait_phase(plane, "jitaccount", "alice", ("Disabled",))
    key = new_key(world / "alice")
    ssh = {"project": "web", "server": "web-1", "requester": "alice"}
    apply(
        plane,
        "alice",
        obj(
            "SSHCertificateRequest",
            "alice-ssh",
            {**ssh, "publicKey": key.with_suffix(".pub").read_text().strip()},
        ),
    )
    wait_phase(plane, "sshcertificaterequest", "alice-ssh", ("Issued",))
    wait_phase(plane, "checkout", "bob-co", ("Expired",), timeout=40)

    want = {
        ("checkout", "alice", "CheckedIn"),
        ("checkout", "bob", "Expired"),
        ("jit", "alice", "Disabled"),
        ("certificate", "alice", "Issued"),
    }
    deadline = time.monotonic() + 20
    while True:
        rows = csv_rows(plane)
        if want <= {(r["kind"], r["who"], r["detail"].split(":")[0]) for r in rows}:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)
    assert {r["namespace"] for r in rows} == {NS}
    by_account = {(r["kind"], r["who"]): r for r in rows}
    assert (
        by_account[("checkout", "alice")]["account"] == SHARED
        and "INC-7 history" in by_account[("checkout", "alice")]["detail"]
    )
    assert (
        by_account[("jit", "alice")]["account"] == "alice_jit"
        and by_account[("certificate", "alice")]["account"] == "web-1"
    )

    # The records outlive their objects; filters narrow; JSON carries the same rows.
    plane.kubectl("admin", "delete", "checkout", "alice-co", "-n", NS, "--timeout=60s")
    assert [r["kind"] for r in csv_rows(plane, "--person", "alice", "--kind", "checkout")] == ["checkout"]
    assert sorted(r["who"] for r in csv_rows(plane, "--account", SHARED)) == ["alice", "bob"]
    assert csv_rows(plane, "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02T00:00:00Z") == []
    done = history_cli(plane, "devops", "-A", "-o", "json", "--project", "k8s")
    assert done.returncode == 0, done.stderr
    assert [(r["kind"], r["account"]) for r in json.loads(done.stdout)] == [("jit", "alice_jit")]
    listed = kubectl_json(plane, "secadmin", "get", "accessrecords", "-n", NS)["items"]
    for item in listed:
        assert "secretName" not in json.dumps(item) and "BEGIN" not in json.dumps(item)
        assert item["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubepam"


def _record(name: str, finished: str, labels: dict[str, str]) -> dict[str, Any]:
    spec = {"kind": "checkout", "time": finished, "finishedAt": finished, "who": "zed", "outcome": "Expired"}
    spec["source"] = {"kind": "Checkout", "name": name, "uid": f"uid-{name}"}
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "AccessRecord",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": spec,
    }


def test_only_the_operator_writes_records_and_nobody_changes_one(plane: ControlPlane, world: Path) -> None:
    owned = {records.MANAGED_BY: records.MANAGER, records.LABEL_KIND: "checkout"}
    fresh = _record("forged", "2099-01-01T00:00:00Z", owned)
    for who in ("alice", "devops", "secadmin", "approver"):
        refused = apply(
            plane, who, {**fresh, "metadata": {**fresh["metadata"], "name": f"forged-{who}"}}, check=False
        )
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), (who, refused.stderr)
    for who in ("devops", "secadmin"):
        for verb in ("create", "update", "patch", "delete"):
            can = plane.kubectl(who, "auth", "can-i", verb, "accessrecords.kubepam.io", "-n", NS, check=False)
            assert can.stdout.strip() == "no", (who, verb)
        assert (
            plane.kubectl(who, "auth", "can-i", "list", "accessrecords.kubepam.io", "-n", NS).stdout.strip()
            == "yes"
        )
    for verb in ("list", "get", "create"):
        can = plane.kubectl("alice", "auth", "can-i", verb, "accessrecords.kubepam.io", "-n", NS, check=False)
        assert can.stdout.strip() == "no", verb
    refused_cli = history_cli(plane, "alice", "-n", NS)
    assert refused_cli.returncode == 2 and "forbidden" in refused_cli.stderr.lower()
    # Even a cluster admin cannot change what a record says (CEL on the schema: self == oldSelf).
    apply(plane, "admin", fresh)
    change = json.dumps({"spec": {"who": "someone-else"}})
    changed = plane.kubectl(
        "admin", "patch", "accessrecord", "forged", "-n", NS, "--type=merge", "-p", change, check=False
    )
    assert changed.returncode != 0 and "an access record is never changed" in changed.stderr
    plane.kubectl("admin", "delete", "accessrecord", "forged", "-n", NS)


def test_records_past_their_retention_are_deleted_by_the_operator(plane: ControlPlane, world: Path) -> None:
    owned = {records.MANAGED_BY: records.MANAGER, records.LABEL_KIND: "checkout"}
    apply(plane, "admin", _record("old-owned", "2020-01-01T00:00:00Z", owned))
    apply(plane, "admin", _record("old-foreign", "2020-01-01T00:00:00Z", {"team": "history"}))
    deadline = time.monotonic() + 20
    while plane.kubectl("admin", "get", "accessrecord", "old-owned", "-n", NS, check=False).returncode == 0:
        assert time.monotonic() < deadline, "the operator did not collect a record past its retention"
        time.sleep(0.2)
    time.sleep(1)
    assert plane.kubectl("admin", "get", "accessrecord", "old-foreign", "-n", NS, check=False).returncode == 0
    plane.kubectl("admin", "delete", "accessrecord", "old-foreign", "-n", NS)
