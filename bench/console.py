"""Benchmark: a console page vs the bare API calls it needs, on the real control plane, in one run.

    python bench/console.py [--accounts 50] [--checkouts 500] [--rounds 40]

One project with `--accounts` shared accounts and `--checkouts` Checkouts by alice (no operator: they
stay Pending, which costs the pages the same). Ours: GET /accounts and /access through `kubepam
console` (session cookie, 5 concurrent lists and 3 SelfSubjectAccessReviews with alice's token, the
operator's verdicts per checkout, Jinja2 rendering). Floor: the same 5 lists and 3 reviews with the same
token straight from aiohttp, nothing rendered. The ratio is what the console adds on top of the API
server's own answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import aiohttp  # noqa: E402

from common import pct  # noqa: E402
from kubepam.console.kube import Kube  # noqa: E402
from kubepam.dev.cluster import ControlPlane, ensure_binaries, free_port  # noqa: E402
from kubepam.dev.install import install, run  # noqa: E402
from tests.e2e.console_world import start_console, stop_console  # noqa: E402
from tests.e2e.harness import team_namespace  # noqa: E402

NS = "bench-console"
PLURALS = ("projects", "checkoutpolicies", "accesspolicies", "checkouts", "jitaccounts")


def seed(plane: ControlPlane, accounts: int, checkouts: int) -> None:
    team_namespace(plane, NS)
    names = [f"acct_{i}" for i in range(accounts)]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "kubepam.io/v1alpha1",
            "kind": "Project",
            "metadata": {"name": "p", "namespace": NS},
            "spec": {"sharedAccounts": [{"name": n, "backend": "kubernetes"} for n in names]},
        },
        {
            "apiVersion": "kubepam.io/v1alpha1",
            "kind": "CheckoutPolicy",
            "metadata": {"name": "p", "namespace": NS},
            "spec": {"project": "p", "maxDuration": "30m"},
        },
        {
            "apiVersion": "kubepam.io/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "people", "namespace": NS},
            "spec": {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "all", "projects": ["p"], "accounts": ["*"]}],
            },
        },
    ]
    plane.kubectl("devops", "apply", "-f", "-", input_text="\n---\n".join(json.dumps(d) for d in docs))
    batch = [
        {
            "apiVersion": "kubepam.io/v1alpha1",
            "kind": "Checkout",
            "metadata": {"name": f"c{i}", "namespace": NS},
            "spec": {"project": "p", "account": names[i % accounts], "reason": "bench", "requester": "alice"},
        }
        for i in range(checkouts)
    ]
    for start in range(0, len(batch), 100):
        text = "\n---\n".join(json.dumps(d) for d in batch[start : start + 100])
        alice = lambda *a, **kw: plane.kubectl("alice", *a, **kw)  # noqa: E731
        run(alice, "apply", "-f", "-", input_text=text, retry_for=60)  # until the policies see the kind


async def measure(plane: ControlPlane, url: str, rounds: int) -> dict[str, list[float]]:
    token = plane.tokens["alice"]
    results: dict[str, list[float]] = {"/accounts": [], "/access": [], "floor": []}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        page = await (await http.get(url + "/login")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        resp = await http.post(url + "/login", data={"csrf": csrf, "token": token})
        assert str(resp.url).endswith("/access"), resp.url
        kube = Kube(plane.server, str(plane.state_dir / "pki" / "ca.crt"))
        try:
            for _ in range(3):  # warm both paths
                await (await http.get(url + "/accounts")).text()
                await floor(kube, token)
            for _ in range(rounds):
                for path in ("/accounts", "/access"):
                    start = time.perf_counter()
                    body = await (await http.get(url + path)).text()
                    results[path].append(time.perf_counter() - start)
                    assert "acct_" in body or path == "/access"
                start = time.perf_counter()
                await floor(kube, token)
                results["floor"].append(time.perf_counter() - start)
        finally:
            await kube.close()
    return results


async def floor(kube: Kube, token: str) -> None:
    await asyncio.gather(
        *(kube.list_or_empty(token, p) for p in PLURALS),
        kube.can(token, "patch", "checkouts", subresource="status"),
        kube.can(token, "patch", "checkouts"),
        kube.can(token, "patch", "workloadconnections", subresource="status"),
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--checkouts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubepam-bench-console-") as tmp:
        plane = ControlPlane(state_dir=Path(tmp) / "plane", bin_dir=ensure_binaries())
        plane.start(controller_manager=False)
        console = None
        try:
            install(lambda *a, **kw: plane.kubectl("admin", *a, **kw))
            seed(plane, args.accounts, args.checkouts)
            console, url = start_console(plane, free_port())
            results = asyncio.run(measure(plane, url, args.rounds))
        finally:
            if console is not None:
                stop_console(console)
            plane.stop()
    base = statistics.median(results["floor"])
    print(
        f"{args.accounts} shared accounts, {args.checkouts} checkouts, {args.rounds} rounds (alice's token)"
    )
    print(f"{'path':<34}{'p50 ms':>9}{'p95 ms':>9}{'x floor':>9}")
    for name, label in (
        ("floor", "floor: 5 lists + 3 reviews"),
        ("/accounts", "console GET /accounts"),
        ("/access", "console GET /access"),
    ):
        values = results[name]
        p50 = statistics.median(values)
        print(f"{label:<34}{p50 * 1000:>9.1f}{pct(values, 0.95) * 1000:>9.1f}{p50 / base:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
