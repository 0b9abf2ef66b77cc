"""Benchmark: certificate issuance in process vs a bare SSHCertificateBuilder sign, and the
create-to-issued latency of SSHCertificateRequest on the real control plane.

    python bench/certificates.py [--n 2000] [--requests 200] [--rate 10] [--skip-cluster]

In process, ours = CertificateIssuer.ssh (policy chain over 10 policies, server lookup, public-key
parse, key id, serial, validity, SSHCertificateBuilder sign with the project's Ed25519 CA); the floor
is the bare builder + sign with the same CA key and an already-parsed public key. On the control
plane: alice creates requests at a steady rate; a watch records when each turns Issued.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType  # noqa: E402

from common import operator_on_control_plane, pct  # noqa: E402
from kubepam.domain.certificates import STANDARD_EXTENSIONS  # noqa: E402
from kubepam.domain.policy import ServerView, Subject, parse_policy  # noqa: E402
from kubepam.domain.project import parse_project  # noqa: E402
from kubepam.services.certificates import CertificateIssuer, Issued  # noqa: E402
from kubepam.services.projects import CAStore  # noqa: E402
from tests.handlers.fakes import FakeSecrets  # noqa: E402


def clock() -> datetime:
    return datetime.now(UTC)


class Directory:
    def __init__(self) -> None:
        self._policies = [
            parse_policy(
                "ns",
                f"p{i}",
                {
                    "principals": {"groups": [f"team-{i}"]},
                    "rules": [
                        {"name": "r", "projects": ["web"], "servers": {"matchLabels": {"role": f"r{i}"}}}
                    ],
                },
            )
            for i in range(9)
        ]
        self._policies.append(
            parse_policy(
                "ns",
                "z-sre",
                {
                    "principals": {"groups": ["sre"]},
                    "rules": [
                        {"name": "web", "projects": ["web"], "servers": {"matchLabels": {"role": "web"}}}
                    ],
                },
            )
        )

    def policies(self, namespace: str) -> list[Any]:
        return self._policies

    def server(self, namespace: str, name: str) -> ServerView:
        return ServerView(name, "web", {"role": "web"})

    _project = parse_project({})

    def project(self, namespace: str, name: str) -> Any:
        return self._project  # the operator keeps parsed projects in a kopf index


def in_process(n: int) -> tuple[float, float, float]:
    cas = CAStore(FakeSecrets(), FakeSecrets(), clock)
    asyncio.run(cas.reconcile("ns", "web", "uid", parse_project({})))
    issuer = CertificateIssuer(Directory(), cas, clock)  # type: ignore[arg-type]
    user_key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = user_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    spec = {"project": "web", "server": "web-1", "publicKey": line}
    subject = Subject("alice", frozenset({"sre", "dev"}))
    ca = cas.current("ns", "web")
    assert ca is not None

    def floor_once(i: int) -> None:
        now = int(time.time())
        builder = (
            SSHCertificateBuilder()
            .public_key(user_key)
            .serial(i + 1)
            .type(SSHCertificateType.USER)
            .key_id(b"kubepam:ns/req:alice")
            .valid_principals([b"alice"])
            .valid_after(now - 30)
            .valid_before(now + 180)
        )
        for ext in sorted(STANDARD_EXTENSIONS):  # the same certificate contents as ours
            builder = builder.add_extension(ext.encode(), b"")
        builder.sign(ca.ssh_key).public_bytes()

    def ours_once(i: int) -> None:
        result = issuer.ssh("ns", f"req-{i}", spec, subject)
        assert isinstance(result, Issued)

    fresh_lines = [
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        for _ in range(n)
    ]

    def ours_fresh_key(i: int) -> None:  # worst case: every request certifies a key never seen before
        result = issuer.ssh("ns", f"req-{i}", {**spec, "publicKey": fresh_lines[i]}, subject)
        assert isinstance(result, Issued)

    def rate(fn: Any) -> float:
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        return n / (time.perf_counter() - start)

    rate(floor_once), rate(ours_once)  # warm up
    floors, ourses = [], []
    for _ in range(3):
        floors.append(rate(floor_once))
        ourses.append(rate(ours_once))
    return statistics.median(floors), statistics.median(ourses), rate(ours_fresh_key)


def on_control_plane(requests: int, per_second: float) -> list[float]:
    import kubernetes

    from tests.e2e.harness import apply, team_namespace, wait_for

    with operator_on_control_plane("certificates") as (plane, _operator, _work):
        ns = team_namespace(plane, "bench")

        def meta(kind: str, name: str) -> dict[str, Any]:
            return {
                "apiVersion": "kubepam.io/v1alpha1",
                "kind": kind,
                "metadata": {"name": name, "namespace": ns},
            }

        apply(
            plane,
            "admin",
            {**meta("Project", "web"), "spec": {}},
            {**meta("Server", "web-1"), "spec": {"project": "web", "hostname": "web-1"}},
            {
                **meta("AccessPolicy", "users"),
                "spec": {
                    "principals": {"groups": ["kubepam:users"]},
                    "rules": [{"name": "all", "projects": ["web"], "servers": {}}],
                },
            },
        )
        assert wait_for(plane, "admin", "project/web", "condition=Ready", ns).returncode == 0
        api_client = kubernetes.config.new_client_from_config(str(plane.kubeconfig("alice")))
        api = kubernetes.client.CustomObjectsApi(api_client)
        created: dict[str, float] = {}
        issued: dict[str, float] = {}
        done = threading.Event()

        def watch() -> None:
            w = kubernetes.watch.Watch()
            for event in w.stream(
                api.list_namespaced_custom_object,
                "kubepam.io",
                "v1alpha1",
                ns,
                "sshcertificaterequests",
                timeout_seconds=120,
            ):
                obj = event["object"]
                name = obj["metadata"]["name"]
                if (obj.get("status") or {}).get("phase") == "Issued" and name not in issued:
                    issued[name] = time.perf_counter()
                    if len(issued) >= requests:
                        w.stop()
            done.set()

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        time.sleep(1)
        line = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        for i in range(requests):
            name = f"r{i}"
            body = {
                **meta("SSHCertificateRequest", name),
                "spec": {"project": "web", "server": "web-1", "publicKey": line, "requester": "alice"},
            }
            created[name] = time.perf_counter()
            api.create_namespaced_custom_object("kubepam.io", "v1alpha1", ns, "sshcertificaterequests", body)
            time.sleep(max(0.0, created[name] + 1 / per_second - time.perf_counter()))
        done.wait(timeout=120)
        return [issued[n] - created[n] for n in created if n in issued]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    floor, ours, fresh = in_process(args.n)
    print(f"SSH certificate issuance in process ({args.n} x 3 rounds, Ed25519 CA, 10 policies)")
    print(f"  floor (bare SSHCertificateBuilder sign, parsed key): {floor:8.0f} /s")
    print(
        f"  kubepam CertificateIssuer.ssh, a renewed key       : {ours:8.0f} /s   floor/ours "
        f"{floor / ours:5.2f}x (aim <= 1.3x)"
    )
    ratio = floor / fresh
    print(
        f"  kubepam CertificateIssuer.ssh, a never-seen key    : {fresh:8.0f} /s   floor/ours {ratio:5.2f}x"
    )
    if args.skip_cluster:
        return
    latencies = on_control_plane(args.requests, args.rate)
    print(
        f"SSHCertificateRequest create -> Issued on the real control plane ({len(latencies)}/{args.requests} "
        f"requests at {args.rate:.0f}/s)"
    )
    print(
        f"  p50 {pct(latencies, 0.5) * 1000:7.1f} ms   p99 {pct(latencies, 0.99) * 1000:7.1f} ms   "
        f"max {max(latencies) * 1000:7.1f} ms"
    )


if __name__ == "__main__":
    main()
