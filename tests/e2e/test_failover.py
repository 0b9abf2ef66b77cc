"""Two operator replicas on the real control plane: one Lease, one leader. Checkouts and JIT accounts
expire while the leader is killed with SIGKILL; the other replica takes over within the lease time,
honours every deadline that fell in the gap right after taking over, and rotates or disables nothing
twice. Both replicas serve the broker all along."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from kubepam.domain.ownership import derived_name, qualified
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    kubectl_json,
    kubepam_object,
    object_status,
    team_namespace,
    wait_for,
)
from tests.e2e.harness import wait_status as wait_for_status

pytestmark = pytest.mark.e2e

NS = "failover"
APPS = "failover-apps"


def obj(kind: str, name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return kubepam_object(kind, name, spec, namespace)


def status(plane: ControlPlane, kind: str, name: str) -> dict[str, Any]:
    return object_status(plane, kind, name, NS)


def wait_status(plane: ControlPlane, kind: str, name: str, fits: Any, timeout: float = 60) -> dict[str, Any]:
    return wait_for_status(plane, kind, name, NS, fits, timeout)


ACCOUNTS = [f"acct_{i}" for i in range(6)]
TIMING = {"KUBEPAM_LEASE_DURATION": "6s", "KUBEPAM_RENEW_DEADLINE": "4s", "KUBEPAM_RETRY_PERIOD": "1s"}
LEASE = ("lease", "kubepam-operator-leader", "-n", "kubepam-system")


def holder(plane: ControlPlane) -> str:
    found = plane.kubectl("admin", "get", *LEASE, "-o", "json", check=False)
    return str(json.loads(found.stdout)["spec"].get("holderIdentity") or "") if found.returncode == 0 else ""


def wait_holder(plane: ControlPlane, want: str, timeout: float) -> float:
    start = time.monotonic()
    while holder(plane) != want:
        assert time.monotonic() - start < timeout, (
            f"{want} did not lead within {timeout}s (holder: {holder(plane)!r})"
        )
        time.sleep(0.1)
    return time.monotonic() - start


def ready(op: OperatorProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{op.url}/readyz", timeout=2) as resp:
        return dict(json.loads(resp.read()))


@pytest.fixture()
def pair(
    plane: ControlPlane, operator: OperatorProcess, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    operator.stop()  # the session's operator steps down; this test runs its own two replicas
    a = OperatorProcess(plane, tmp_path / "a.log", {**TIMING, "KUBEPAM_IDENTITY": "replica-a"})
    b = OperatorProcess(plane, tmp_path / "b.log", {**TIMING, "KUBEPAM_IDENTITY": "replica-b"})
    try:
        a.start()
        wait_holder(plane, "replica-a", 30)
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()
        operator.start()


def test_the_other_replica_takes_over_and_every_deadline_is_kept_once(
    plane: ControlPlane, pair: tuple[OperatorProcess, OperatorProcess]
) -> None:
    a, b = pair
    deadline = time.monotonic() + 10  # b's elector reads the Lease within a retry period of its start
    while ready(b)["holder"] != "replica-a" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready(a)["leader"] is True and ready(b)["leader"] is False and ready(b)["holder"] == "replica-a"
    team_namespace(plane, NS)
    team_namespace(plane, APPS)
    apply(
        plane,
        "admin",
        obj(
            "Project",
            "fo",
            {
                "sharedAccounts": [{"name": n, "backend": "kubernetes"} for n in ACCOUNTS],
                "jit": {
                    "enabled": True,
                    "allowedGroups": ["view"],
                    "creators": {"groups": ["kubepam:users"]},
                    "maxDuration": "1h",
                    "namespaces": [APPS],
                },
            },
        ),
        obj("CheckoutPolicy", "fo", {"project": "fo", "maxDuration": "30m", "rotation": {"onExpiry": True}}),
        obj(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "all", "projects": ["fo"], "accounts": ["*"]}],
            },
        ),
    )
    assert wait_for(plane, "admin", "project/fo", "condition=Ready", NS).returncode == 0
    time.sleep(2)  # the JIT settings ConfigMap becomes the admission parameter
    for i, account in enumerate(ACCOUNTS):  # expiries 12 s .. 22 s from now: most fall in the gap
        apply(
            plane,
            "alice",
            obj(
                "Checkout",
                f"co-{i}",
                {
                    "project": "fo",
                    "account": account,
                    "requester": "alice",
                    "reason": "failover test",
                    "duration": f"{12 + 2 * i}s",
                },
            ),
        )
    apply(
        plane,
        "alice",
        obj(
            "JitAccount",
            "alice",
            {
                "project": "fo",
                "owner": "alice",
                "groups": ["view"],
                "reason": "failover test",
                "duration": "1m",
            },
        ),
    )
    deadline = time.monotonic() + 30
    while not all(
        status(plane, "checkout", f"co-{i}").get("phase") == "Active" for i in range(len(ACCOUNTS))
    ):
        assert time.monotonic() < deadline, [
            status(plane, "checkout", f"co-{i}") for i in range(len(ACCOUNTS))
        ]
        time.sleep(0.2)
    jit = wait_status(plane, "jitaccount", "alice", lambda s: s.get("phase") == "Active", 30)

    # kill the leader right before the first expiry: deadlines fall in the gap
    first = min(ts(status(plane, "checkout", f"co-{i}")["expiresAt"]) for i in range(len(ACCOUNTS)))
    time.sleep(max(0.0, first - time.time() - 1))
    assert a.proc is not None
    killed = time.time()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    a.proc = None
    took = wait_holder(plane, "replica-b", 6 + 1 + 2)  # lease duration + one retry period + slack
    took_over = time.time()
    assert ready(b)["leader"] is True
    shown = subprocess.run(
        [sys.executable, "-m", "kubepam", "status"],
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig("admin"))},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "leader:       replica-b" in shown.stdout, shown

    lateness = []
    for i in range(len(ACCOUNTS)):
        done = wait_status(plane, "checkout", f"co-{i}", lambda s: s.get("phase") == "Expired", 60)
        observed = time.time()
        expires = ts(done["expiresAt"])
        lateness.append(observed - max(expires, took_over))  # at most: honoured right after take-over
        assert done["rotation"]["completedAt"]
    assert max(lateness) < 5, lateness
    for account in ACCOUNTS:  # one rotation when first handed out, one at its expiry: never twice
        assert rotations(plane, account) == 2, account
    disabled = wait_status(plane, "jitaccount", "alice", lambda s: s.get("phase") == "Disabled", 90)
    assert ts(disabled["expiresAt"]) == ts(jit["expiresAt"])
    events = kubectl_json(
        plane, "admin", "get", "events.events.k8s.io", "-n", NS, "--field-selector", "regarding.name=alice"
    )["items"]
    disabled_events = [e for e in events if e.get("reason") == "Disabled"]
    assert sum(int((e.get("series") or {}).get("count") or 1) for e in disabled_events) == 1
    print(
        f"take-over {took:.1f}s after SIGKILL at {killed:.0f}; "
        f"lateness of gap deadlines: {sorted(round(x, 2) for x in lateness)}"
    )


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def rotations(plane: ControlPlane, account: str) -> int:
    uid = kubectl_json(plane, "admin", "get", "project", "fo", "-n", NS)["metadata"]["uid"]
    secret = kubectl_json(
        plane, "admin", "get", "secret", qualified(derived_name("account", "fo", uid), account), "-n", NS
    )
    return int(base64.b64decode(secret["data"]["rotations"]).decode())
