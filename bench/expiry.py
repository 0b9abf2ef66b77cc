"""Benchmark: how late checkouts are checked in after their deadline, beside a plain asyncio
sleep-until for the same deadlines, on the real control plane with the real operator.

    python bench/expiry.py [--checkouts 1000] [--spread 60]

1,000 shared accounts (kubernetes backend, 4 projects x 250) are checked out by alice with durations
spread so that their deadlines fall across a minute. A watch records when each Checkout reaches
Expired (check-in done: password rotated, credential Secret and RBAC removed, Lease released);
lateness = that moment minus status.expiresAt. The floor runs in this process: one asyncio task per
deadline sleeping until it, measuring its own lateness under the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import kubernetes  # noqa: E402

from common import operator_on_control_plane, pct  # noqa: E402
from kubepam.dev.cluster import ControlPlane  # noqa: E402
from tests.e2e.harness import apply, team_namespace, wait_for  # noqa: E402

NS = "bench"
PER_PROJECT = 250


def _wait_until(condition: Any, until: float) -> None:
    while not condition() and time.time() < until:
        time.sleep(0.2)


def setup(plane: ControlPlane, count: int) -> list[tuple[str, str]]:
    team_namespace(plane, NS)
    projects = (count + PER_PROJECT - 1) // PER_PROJECT
    accounts: list[tuple[str, str]] = []
    docs: list[dict[str, Any]] = []
    for p in range(projects):
        names = [f"acct_{p}_{i}" for i in range(min(PER_PROJECT, count - p * PER_PROJECT))]
        accounts += [(f"p{p}", n) for n in names]
        docs.append(
            {
                "apiVersion": "kubepam.io/v1alpha1",
                "kind": "Project",
                "metadata": {"name": f"p{p}", "namespace": NS},
                "spec": {"sharedAccounts": [{"name": n, "backend": "kubernetes"} for n in names]},
            }
        )
        docs.append(
            {
                "apiVersion": "kubepam.io/v1alpha1",
                "kind": "CheckoutPolicy",
                "metadata": {"name": f"p{p}", "namespace": NS},
                "spec": {"project": f"p{p}", "maxDuration": "1h"},
            }
        )
    docs.append(
        {
            "apiVersion": "kubepam.io/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "all", "namespace": NS},
            "spec": {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "all", "projects": ["*"], "accounts": ["*"]}],
            },
        }
    )
    apply(plane, "admin", *docs)
    for p in range(projects):
        assert wait_for(plane, "admin", f"project/p{p}", "condition=Ready", NS).returncode == 0
        assert wait_for(plane, "admin", f"checkoutpolicy/p{p}", "condition=Ready", NS).returncode == 0
    return accounts


def run(count: int, spread: float, lead: float) -> tuple[list[float], list[float], float]:
    with operator_on_control_plane("expiry") as (plane, _operator, _work):
        accounts = setup(plane, count)
        client = kubernetes.config.new_client_from_config(str(plane.kubeconfig("alice")))
        api = kubernetes.client.CustomObjectsApi(client)
        expired: dict[str, float] = {}
        deadlines: dict[str, float] = {}
        done = threading.Event()

        def watch() -> None:
            w = kubernetes.watch.Watch()
            for event in w.stream(
                api.list_namespaced_custom_object,
                "kubepam.io",
                "v1alpha1",
                NS,
                "checkouts",
                timeout_seconds=int(lead + spread + 300),
            ):
                obj = event["object"]
                status = obj.get("status") or {}
                name = obj["metadata"]["name"]
                if status.get("expiresAt") and name not in deadlines:
                    deadlines[name] = datetime.fromisoformat(
                        status["expiresAt"].replace("Z", "+00:00")
                    ).timestamp()
                if status.get("phase") == "Expired" and name not in expired:
                    expired[name] = time.time()
                    if len(expired) >= count:
                        w.stop()
            done.set()

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(1)
        start = time.time()

        def create(i: int) -> None:
            project, account = accounts[i]
            # every deadline lands at start + lead + i * spread / count, however long creation takes
            duration = max(10.0, start + lead + i * spread / count - time.time())
            api.create_namespaced_custom_object(
                "kubepam.io",
                "v1alpha1",
                NS,
                "checkouts",
                {
                    "apiVersion": "kubepam.io/v1alpha1",
                    "kind": "Checkout",
                    "metadata": {"name": f"c{i:04d}", "namespace": NS},
                    "spec": {
                        "project": project,
                        "account": account,
                        "requester": "alice",
                        "reason": "bench",
                        "duration": f"{duration:.3f}s",
                    },
                },
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, range(count)))
        created_in = time.time() - start

        async def floor() -> list[float]:
            async def sleeper(deadline: float) -> float:
                await asyncio.sleep(max(0.0, deadline - time.time()))
                return time.time() - deadline

            # The deadlines become known as the operator grants the checkouts (bounded wait).
            granted = threading.Event()
            threading.Thread(
                target=lambda: (_wait_until(lambda: len(deadlines) >= count, start + lead), granted.set()),
                daemon=True,
            ).start()
            await asyncio.to_thread(granted.wait, lead)
            return list(await asyncio.gather(*(sleeper(d) for d in list(deadlines.values()))))

        floor_lateness = asyncio.run(floor())
        done.wait(timeout=lead + spread + 300)
        ours = [expired[n] - deadlines[n] for n in expired if n in deadlines]
        return ours, floor_lateness, created_in


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkouts", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which deadlines fall")
    parser.add_argument("--lead", type=float, default=150.0, help="seconds from start to the first deadline")
    args = parser.parse_args()
    ours, floor, created_in = run(args.checkouts, args.spread, args.lead)
    print(
        f"checkout expiry on the real control plane: {len(ours)}/{args.checkouts} checked in, deadlines over "
        f"{args.spread:.0f}s (created in {created_in:.0f}s)"
    )
    print(
        f"  kubepam (deadline -> Expired, rotation + cleanup done): p50 {pct(ours, 0.5) * 1000:7.0f} ms   "
        f"p99 {pct(ours, 0.99) * 1000:7.0f} ms   max {max(ours) * 1000:7.0f} ms"
    )
    print(
        f"  floor (asyncio sleep-until, same deadlines)           : p50 {pct(floor, 0.5) * 1000:7.1f} ms   "
        f"p99 {pct(floor, 0.99) * 1000:7.1f} ms   max {max(floor) * 1000:7.1f} ms"
    )
    mean_ours, mean_floor = statistics.mean(ours) * 1000, statistics.mean(floor) * 1000
    print(f"  mean lateness ours/floor: {mean_ours:.0f} ms / {mean_floor:.1f} ms")


if __name__ == "__main__":
    main()
