"""Failover of the leader, on the real control plane with two operator replicas.

    python bench/failover.py [--checkouts 200] [--lease 15]

Checkouts of kubernetes-backend accounts expire continuously (spread over 40 s); the leader is killed
with SIGKILL in the middle. Prints the take-over time (SIGKILL -> the other replica holds the Lease,
beside the configured lease duration, which is the floor: nobody may take over earlier), the lateness
of the deadlines that fell in the gap (Expired observed minus max(expiresAt, take-over)), the lateness
of the others, and the rotations counted against the expirations (double processing would show here).
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import threading
import time
from datetime import datetime

from common import operator_on_control_plane, pct
from kubepam.dev.cluster import ControlPlane
from kubepam.domain.ownership import derived_name, qualified
from tests.e2e.harness import OperatorProcess, apply, team_namespace, wait_for

NS = "benchfo"


def holder(plane: ControlPlane) -> str:
    lease = ("lease", "kubepam-operator-leader", "-n", "kubepam-system")
    found = plane.kubectl("admin", "get", *lease, "-o", "json", check=False)
    return str(json.loads(found.stdout)["spec"].get("holderIdentity") or "") if found.returncode == 0 else ""


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkouts", type=int, default=200)
    parser.add_argument("--lease", type=float, default=15.0)
    args = parser.parse_args()
    timing = {
        "KUBEPAM_LEASE_DURATION": f"{args.lease}s",
        "KUBEPAM_RENEW_DEADLINE": f"{args.lease * 2 / 3:.1f}s",
        "KUBEPAM_RETRY_PERIOD": f"{max(0.5, args.lease / 7.5):.1f}s",
    }
    with operator_on_control_plane("failover") as (plane, first, work):
        first.stop()  # the harness's single operator: replaced by two replicas below
        a = OperatorProcess(plane, work / "a.log", {**timing, "KUBEPAM_IDENTITY": "replica-a"})
        b = OperatorProcess(plane, work / "b.log", {**timing, "KUBEPAM_IDENTITY": "replica-b"})
        a.start()
        while holder(plane) != "replica-a":
            time.sleep(0.1)
        b.start()
        try:
            team_namespace(plane, NS)
            accounts = [f"acct_{i}" for i in range(args.checkouts)]
            apply(
                plane,
                "admin",
                {
                    "apiVersion": "kubepam.io/v1alpha1",
                    "kind": "Project",
                    "metadata": {"name": "fo", "namespace": NS},
                    "spec": {"sharedAccounts": [{"name": n, "backend": "kubernetes"} for n in accounts]},
                },
                {
                    "apiVersion": "kubepam.io/v1alpha1",
                    "kind": "CheckoutPolicy",
                    "metadata": {"name": "fo", "namespace": NS},
                    "spec": {"project": "fo", "maxDuration": "30m"},
                },
                {
                    "apiVersion": "kubepam.io/v1alpha1",
                    "kind": "AccessPolicy",
                    "metadata": {"name": "people", "namespace": NS},
                    "spec": {
                        "principals": {"groups": ["kubepam:users"]},
                        "rules": [{"name": "all", "projects": ["fo"], "accounts": ["*"]}],
                    },
                },
            )
            assert wait_for(plane, "admin", "project/fo", "condition=Ready", NS).returncode == 0
            docs = [
                {
                    "apiVersion": "kubepam.io/v1alpha1",
                    "kind": "Checkout",
                    "metadata": {"name": f"co-{i}", "namespace": NS},
                    "spec": {
                        "project": "fo",
                        "account": account,
                        "requester": "alice",
                        "reason": "failover bench",
                        "duration": f"{20 + 40 * i / args.checkouts:.1f}s",
                    },
                }
                for i, account in enumerate(accounts)
            ]
            apply(plane, "alice", *docs)
            expired: dict[str, float] = {}
            stop = threading.Event()

            def watch() -> None:
                import subprocess

                kubeconfig = str(plane.kubeconfig("admin"))
                cmd = [plane.binary("kubectl"), "--kubeconfig", kubeconfig, "get", "checkouts", "-n", NS]
                cmd += ["-w", "-o", "json", "--output-watch-events"]
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
                decoder, buffer = json.JSONDecoder(), ""
                assert proc.stdout is not None
                for line in proc.stdout:
                    buffer += line
                    try:
                        event, _ = decoder.raw_decode(buffer.strip())
                    except ValueError:
                        continue
                    buffer = ""
                    obj = event["object"]
                    if (obj.get("status") or {}).get("phase") == "Expired":
                        expired.setdefault(obj["metadata"]["name"], time.time())
                    if stop.is_set() or len(expired) == args.checkouts:
                        break
                proc.kill()

            thread = threading.Thread(target=watch, daemon=True)
            thread.start()
            time.sleep(20 + 40 * 0.3 - 1)  # kill when about a third of the deadlines have passed
            assert a.proc is not None
            killed = time.time()
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(timeout=10)
            a.proc = None
            while holder(plane) != "replica-b":
                time.sleep(0.05)
            took_over = time.time()
            thread.join(timeout=180)
            stop.set()
            got = json.loads(plane.kubectl("admin", "get", "checkouts", "-n", NS, "-o", "json").stdout)[
                "items"
            ]
            gap, others = [], []
            for obj in got:
                name = obj["metadata"]["name"]
                if name not in expired:
                    continue
                expires = ts(obj["status"]["expiresAt"])
                if killed <= expires <= took_over:
                    gap.append(expired[name] - took_over)
                elif expires > took_over:
                    others.append(expired[name] - expires)
            uid = json.loads(plane.kubectl("admin", "get", "project", "fo", "-n", NS, "-o", "json").stdout)[
                "metadata"
            ]["uid"]
            rotations = 0
            for account in accounts:
                name = qualified(derived_name("account", "fo", uid), account)
                secret = json.loads(
                    plane.kubectl("admin", "get", "secret", name, "-n", NS, "-o", "json").stdout
                )
                rotations += (
                    int(base64.b64decode(secret["data"]["rotations"]).decode()) - 1
                )  # minus the first
            ms = 1000.0
            report = [
                f"failover on the real control plane: {args.checkouts} checkouts expiring over 40 s, "
                "leader SIGKILLed",
                f"  take-over (SIGKILL -> other replica holds the Lease): {took_over - killed:.1f} s "
                f"(lease duration {args.lease:.0f} s: the floor)",
                f"  deadlines in the gap: {len(gap)}; honoured after take-over: "
                f"p50 {pct(gap, 0.5) * ms:.0f} ms "
                f"p99 {pct(gap, 0.99) * ms:.0f} ms max {max(gap, default=0) * ms:.0f} ms",
                f"  deadlines after take-over: {len(others)}; lateness p50 {pct(others, 0.5) * ms:.0f} ms "
                f"p99 {pct(others, 0.99) * ms:.0f} ms",
                f"  expired {len(expired)}/{args.checkouts}; rotations at expiry: {rotations} "
                "(double processing would exceed the expirations)",
            ]
            print("\n".join(report))
        finally:
            a.stop()
            b.stop()


if __name__ == "__main__":
    main()
