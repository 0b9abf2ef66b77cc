"""Benchmark: 1,000 Kubernetes JIT accounts expiring within a minute on the real control plane:
how late each is disabled after its window ends (p50/p99), and the operator's memory before and after,
beside an empty kopf operator watching the same objects.

    python bench/jit.py [--accounts 1000] [--spread 60]

Lateness = the moment a watch sees status.phase Disabled (bindings removed, ServiceAccount deleted so
every token is dead, credential Secret removed) minus status.expiresAt.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import kubernetes  # noqa: E402

from common import jit_project, operator_on_control_plane, pct, rss_mib  # noqa: E402
from tests.e2e.harness import apply, team_namespace, wait_for  # noqa: E402

NS = "benchjit"
APPS = "benchjit-apps"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=60.0)
    parser.add_argument(
        "--lead", type=float, default=300.0, help="seconds from start to the first window end"
    )
    args = parser.parse_args()
    count = args.accounts
    with operator_on_control_plane("jit") as (plane, operator, work):
        empty: subprocess.Popen[bytes] | None = None
        try:
            empty_log = (work / "empty.log").open("wb")
            empty = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "empty_operator.py")],
                stdout=empty_log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(plane.kubeconfig("admin"))},
            )
            team_namespace(plane, NS)
            team_namespace(plane, APPS)
            apply(
                plane,
                "admin",
                jit_project(NS, APPS, "2h"),
            )
            assert wait_for(plane, "admin", "project/jit", "condition=Ready", NS).returncode == 0
            time.sleep(5)
            assert operator.proc is not None
            before = (rss_mib(operator.proc.pid), rss_mib(empty.pid))
            client = kubernetes.config.new_client_from_config(str(plane.kubeconfig("admin")))
            api = kubernetes.client.CustomObjectsApi(client)
            disabled: dict[str, float] = {}
            ends: dict[str, float] = {}
            done = threading.Event()

            def watch() -> None:
                """Follow the JitAccounts until all are disabled; a watch that ends is opened again."""
                finish = time.time() + args.lead + args.spread + 900
                while len(disabled) < count and time.time() < finish:
                    w = kubernetes.watch.Watch()
                    try:
                        for event in w.stream(
                            api.list_namespaced_custom_object,
                            "kubepam.io",
                            "v1alpha1",
                            NS,
                            "jitaccounts",
                            timeout_seconds=300,
                        ):
                            item = event["object"]
                            status, name = item.get("status") or {}, item["metadata"]["name"]
                            if status.get("expiresAt") and status.get("phase") == "Active":
                                ends[name] = datetime.fromisoformat(
                                    status["expiresAt"].replace("Z", "+00:00")
                                ).timestamp()
                            if status.get("phase") == "Disabled" and name not in disabled:
                                disabled[name] = time.time()
                                if len(disabled) >= count:
                                    w.stop()
                    except Exception as exc:
                        print(f"watch reopened after {type(exc).__name__}", file=sys.stderr)
                done.set()

            threading.Thread(target=watch, daemon=True).start()
            time.sleep(1)
            start = time.time()

            def create(i: int) -> None:
                window = max(60.0, start + args.lead + i * args.spread / count - time.time())
                api.create_namespaced_custom_object(
                    "kubepam.io",
                    "v1alpha1",
                    NS,
                    "jitaccounts",
                    {
                        "apiVersion": "kubepam.io/v1alpha1",
                        "kind": "JitAccount",
                        "metadata": {"name": f"u{i:04d}", "namespace": NS},
                        "spec": {
                            "project": "jit",
                            "owner": f"u{i:04d}",
                            "groups": ["view"],
                            "reason": "bench run",
                            "duration": f"{window:.3f}s",
                        },
                    },
                )

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(create, range(count)))
            done.wait(timeout=args.lead + args.spread + 600)
            after = (rss_mib(operator.proc.pid), rss_mib(empty.pid))
            late = [disabled[n] - ends[n] for n in disabled if n in ends]
            activated_in = max(ends.values()) - min(ends.values()) if ends else 0.0
            print(
                f"JIT expiry on the real control plane: {len(late)}/{count} accounts disabled "
                f"(window ends spread over {activated_in:.0f}s)"
            )
            print(
                f"  lateness after the window end: p50 {pct(late, 0.5) * 1000:6.0f} ms   "
                f"p99 {pct(late, 0.99) * 1000:6.0f} ms   max {max(late) * 1000:6.0f} ms"
            )
            print(
                f"  operator RSS   : {before[0]:6.1f} MiB before -> {after[0]:6.1f} MiB after "
                f"({after[0] - before[0]:+.1f} MiB)"
            )
            print(
                f"  empty kopf RSS : {before[1]:6.1f} MiB before -> {after[1]:6.1f} MiB after "
                f"({after[1] - before[1]:+.1f} MiB)"
            )
        finally:
            if empty is not None:
                empty.terminate()
                empty.wait(timeout=20)


if __name__ == "__main__":
    main()
