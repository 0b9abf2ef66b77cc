"""Benchmark: kubepam at 10,000 objects on the real control plane, beside an empty kopf operator that
watches the same kinds in the same run (bench/empty_operator.py, a no-op create handler per kind).

    python bench/scale.py [--objects 10000] [--concurrency 16] [--deadlines N] [--lead 120] [--spread 60]
    python bench/scale.py --objects 5000 --tracemalloc      # where the memory goes (1k -> 5k diff)

The mix (of --objects): 40% JitAccounts (Kubernetes backend), 30% Checkouts (one shared account
each, 250 accounts per Project), 10% SSHCertificateRequests, 10% X509CertificateRequests, 10% Servers,
created in a shuffled order by a client with --concurrency requests in flight. The last --deadlines
of them (default a tenth, half JIT accounts, half Checkouts; named to be listed last) end their
windows --lead seconds after their creation starts, spread over --spread seconds; all others end
theirs hours later.

Measured, each beside the empty operator where it has one:
- RSS of both processes before the objects and once all are Ready/handled (and kopf is idle);
- create -> Ready (kubepam: condition Ready=True seen by a watch) against create -> handled (empty
  operator: its kopf annotation seen by the same watch): p50, p99, and throughput (objects per second
  from the first create to the last Ready/handled);
- a restart with every object present: kubepam is stopped just before the first near deadline and
  started again; time to ready, time to the first on-time expiry after start, lateness of the
  deadlines that fell after start (p50/p99/max) and of those that fell in the gap.

With --tracemalloc both operators run under bench/traced_operator.py; the objects are created in steps
(1,000 then the rest), each step waited for, and a snapshot of each process diffed between them: the
top allocators per object are printed (and the full lists written to the work directory).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import kubernetes  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from common import (  # noqa: E402
    ControlPlane,
    OperatorProcess,
    ensure_binaries,
    install,
    jit_project,
    pct,
    rss_mib,
)
from tests.e2e.harness import apply, team_namespace, wait_for  # noqa: E402

NS = "scale"
APPS = "scale-apps"
GROUP, VERSION = "kubepam.io", "v1alpha1"
PER_PROJECT = 250
HANDLED = "empty.kopf.dev/last-handled-configuration"
PLURALS = ("jitaccounts", "checkouts", "sshcertificaterequests", "x509certificaterequests", "servers")
EXPIRED = {"jitaccounts": "Disabled", "checkouts": "Expired"}
LONG = 3 * 3600.0  # the windows of all but the restart set: they must be resumed, not reached


def meta(kind: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "namespace": NS}
    if labels:
        m["labels"] = labels
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": m}


@dataclass
class Item:
    plural: str
    name: str
    identity: str  # who creates it
    body: dict[str, Any]
    deadline: float | None = None  # absolute, for the restart set (filled in at creation)


@dataclass
class Seen:
    """What the watches saw, by (plural, name)."""

    created: dict[tuple[str, str], float] = field(default_factory=dict)
    ready: dict[tuple[str, str], float] = field(default_factory=dict)
    handled: dict[tuple[str, str], float] = field(default_factory=dict)
    expired: dict[tuple[str, str], float] = field(default_factory=dict)
    expires_at: dict[tuple[str, str], float] = field(default_factory=dict)
    phases: dict[tuple[str, str], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def watch_kind(api: Any, plural: str, seen: Seen, stop: threading.Event) -> None:
    """Follow one kind in NS until ``stop``; a watch that ends is opened again where it left off."""
    version = ""
    while not stop.is_set():
        w = kubernetes.watch.Watch()
        try:
            kwargs: dict[str, Any] = {"timeout_seconds": 60, "allow_watch_bookmarks": True}
            if version:
                kwargs["resource_version"] = version
            for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, NS, plural, **kwargs):
                now = time.time()
                obj = event["object"]
                meta = obj.get("metadata") or {}
                version = meta.get("resourceVersion") or version
                if event["type"] in ("BOOKMARK", "DELETED", "ERROR"):
                    continue
                key = (plural, meta["name"])
                status = obj.get("status") or {}
                with seen.lock:
                    if key not in seen.ready and any(
                        c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or ()
                    ):
                        seen.ready[key] = now
                    if key not in seen.handled and HANDLED in (meta.get("annotations") or {}):
                        seen.handled[key] = now
                    phase = status.get("phase") or ""
                    seen.phases[key] = phase
                    if status.get("expiresAt") and phase == "Active":
                        seen.expires_at[key] = _ts(status["expiresAt"])
                    if phase == EXPIRED.get(plural) and key not in seen.expired:
                        seen.expired[key] = now
                if stop.is_set():
                    w.stop()
        except Exception as exc:
            if "410" in str(exc) or "Expired" in str(exc):
                version = ""
            time.sleep(0.5)


def ssh_keys(n: int) -> list[str]:
    return [
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + f" user{i}@laptop"
        for i in range(n)
    ]


def csr_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def plan_objects(count: int, deadlines: int) -> tuple[list[Item], list[Item], int]:
    """The shuffled main objects, the restart set (its deadlines filled in later), and how many
    checkout accounts the Projects need."""
    n_servers = n_ssh = n_x509 = count // 10
    n_checkouts = 3 * count // 10
    n_jit = count - n_servers - n_ssh - n_x509 - n_checkouts
    d_checkouts = min(n_checkouts, deadlines // 2)
    d_jit = min(n_jit, deadlines - d_checkouts)
    keys, csr = ssh_keys(50), csr_pem()
    width = len(str(count))

    def jit(i: int) -> Item:
        owner = f"u{i:0{width}d}"
        body = meta("JitAccount", owner) | {
            "spec": {
                "project": "jit",
                "owner": owner,
                "groups": ["view"],
                "reason": "scale bench",
                "duration": f"{LONG:.0f}s",
            }
        }
        return Item("jitaccounts", owner, "admin", body)

    def checkout(i: int) -> Item:
        name = f"c{i:0{width}d}"
        body = meta("Checkout", name) | {
            "spec": {
                "project": f"p{i // PER_PROJECT}",
                "account": f"acct_{i}",
                "requester": "alice",
                "reason": "scale bench",
                "duration": f"{LONG:.0f}s",
            }
        }
        return Item("checkouts", name, "alice", body)

    main: list[Item] = []
    restart: list[Item] = []
    for i in range(n_jit):
        (restart if i >= n_jit - d_jit else main).append(jit(i))
    for i in range(n_checkouts):
        (restart if i >= n_checkouts - d_checkouts else main).append(checkout(i))
    for i in range(n_servers):
        name = f"s{i:0{width}d}"
        main.append(
            Item(
                "servers",
                name,
                "admin",
                meta("Server", name, {"role": "web"}) | {"spec": {"project": "web", "hostname": name}},
            )
        )
    for i in range(n_ssh):
        name = f"k{i:0{width}d}"
        spec = {"project": "web", "server": "s0", "publicKey": keys[i % len(keys)], "requester": "alice"}
        main.append(
            Item(
                "sshcertificaterequests", name, "alice", meta("SSHCertificateRequest", name) | {"spec": spec}
            )
        )
    for i in range(n_x509):
        name = f"x{i:0{width}d}"
        spec = {"project": "web", "server": "s0", "csr": csr, "requester": "alice"}
        main.append(
            Item(
                "x509certificaterequests",
                name,
                "alice",
                meta("X509CertificateRequest", name) | {"spec": spec},
            )
        )
    random.Random(12).shuffle(main)
    random.Random(13).shuffle(restart)
    return main, restart, n_checkouts


def setup(plane: ControlPlane, n_accounts: int) -> None:
    team_namespace(plane, NS)
    team_namespace(plane, APPS)

    docs: list[dict[str, Any]] = [
        jit_project(NS, APPS, "4h"),
        meta("Project", "web") | {"spec": {}},
        meta("Server", "s0") | {"spec": {"project": "web", "hostname": "s0"}},
        meta("AccessPolicy", "all")
        | {
            "spec": {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [
                    {"name": "accounts", "projects": ["*"], "accounts": ["*"]},
                    {"name": "servers", "projects": ["web"], "servers": {}},
                ],
            }
        },
    ]
    projects = (n_accounts + PER_PROJECT - 1) // PER_PROJECT
    for p in range(projects):
        accounts = range(p * PER_PROJECT, min(n_accounts, (p + 1) * PER_PROJECT))
        docs.append(
            meta("Project", f"p{p}")
            | {"spec": {"sharedAccounts": [{"name": f"acct_{i}", "backend": "kubernetes"} for i in accounts]}}
        )
        docs.append(meta("CheckoutPolicy", f"p{p}") | {"spec": {"project": f"p{p}", "maxDuration": "4h"}})
    apply(plane, "admin", *docs)
    for name in ["jit", "web", *(f"p{p}" for p in range(projects))]:
        assert wait_for(plane, "admin", f"project/{name}", "condition=Ready", NS, "300s").returncode == 0
    for p in range(projects):
        assert wait_for(plane, "admin", f"checkoutpolicy/p{p}", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "admin", "server/s0", "condition=Ready", NS).returncode == 0


class Creator:
    def __init__(self, plane: ControlPlane, concurrency: int, seen: Seen) -> None:
        self.apis: dict[str, Any] = {}
        for identity in ("admin", "alice"):
            config = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                str(plane.kubeconfig(identity)), client_configuration=config
            )
            config.connection_pool_maxsize = concurrency
            self.apis[identity] = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.seen = seen
        self.failures: list[str] = []

    def create(self, items: list[Item], duration_of: Callable[[Item], str] | None = None) -> None:
        def one(item: Item) -> None:
            body = item.body
            if duration_of is not None:
                body = {**body, "spec": {**body["spec"], "duration": duration_of(item)}}
            started = time.time()
            for attempt in range(5):
                try:
                    self.apis[item.identity].create_namespaced_custom_object(
                        GROUP, VERSION, NS, item.plural, body
                    )
                    break
                except kubernetes.client.exceptions.ApiException as exc:
                    if exc.status == 409:
                        break
                    if attempt == 4 or exc.status not in (429, 500, 503, 504):
                        self.failures.append(
                            f"{item.plural}/{item.name}: {exc.status} {exc.reason} {exc.body}"
                        )
                        return
                    time.sleep(1)
            with self.seen.lock:
                self.seen.created[(item.plural, item.name)] = started

        list(self.pool.map(one, items))


def wait_all(seen: Seen, keys: list[tuple[str, str]], timeout: float, empty: bool = True) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with seen.lock:
            missing = sum(1 for k in keys if k not in seen.ready or (empty and k not in seen.handled))
        if not missing:
            return True
        time.sleep(0.5)
    with seen.lock:
        not_ready = [k for k in keys if k not in seen.ready]
        not_handled = [k for k in keys if k not in seen.handled]
    print(
        f"  (timed out: {len(not_ready)} not Ready, e.g. {not_ready[:3]} "
        f"{[seen.phases.get(k) for k in not_ready[:3]]}; {len(not_handled)} not handled by empty kopf)"
    )
    return False


def _ask(
    proc: subprocess.Popen[bytes] | None, out: Path, signum: int, prefix: str, timeout: float
) -> Path | None:
    """Signal bench/traced_operator.py and wait (bounded) for the file it then writes."""
    assert proc is not None
    before = set(out.glob(f"{prefix}-*"))
    proc.send_signal(signum)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if new := set(out.glob(f"{prefix}-*")) - before:
            return new.pop()
        time.sleep(0.2)
    return None


def probe(proc: subprocess.Popen[bytes] | None, out: Path, timeout: float = 60) -> dict[str, int]:
    """What the process's allocators hold, and its RSS after malloc_trim (bench/traced_operator.py)."""
    found = _ask(proc, out, signal.SIGUSR2, "probe", timeout)
    answer: dict[str, int] = json.loads(found.read_text()) if found else {}
    return answer


def snapshot(proc: subprocess.Popen[bytes] | None, out: Path, timeout: float = 300) -> tracemalloc.Snapshot:
    found = _ask(proc, out, signal.SIGUSR1, "snap", timeout)
    if found is None:
        raise TimeoutError(f"no snapshot in {out}")
    return tracemalloc.Snapshot.load(str(found))


def report_diff(
    name: str, old: tracemalloc.Snapshot, new: tracemalloc.Snapshot, objects: int, work: Path
) -> None:
    filters = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    ]
    old, new = old.filter_traces(filters), new.filter_traces(filters)
    by_line = new.compare_to(old, "lineno")
    by_trace = new.compare_to(old, "traceback")
    total = sum(s.size_diff for s in by_line)
    print(
        f"  {name}: traced Python memory {sum(s.size for s in by_line) / 2**20:.1f} MiB, "
        f"+{total / 2**20:.1f} MiB for {objects} objects = {total / objects / 1024:.1f} KiB per object"
    )
    for stat in by_line[:12]:
        frame = stat.traceback[0]
        print(
            f"    {stat.size_diff / objects:8.0f} B/object  {stat.count_diff / objects:6.1f} blocks/object  "
            f"{_short(frame.filename)}:{frame.lineno}"
        )
    with (work / f"tracemalloc-{name}.txt").open("w") as f:
        f.write(f"{name}: +{total} bytes for {objects} objects\n\n== by line ==\n")
        for stat in by_line[:80]:
            f.write(
                f"{stat.size_diff / objects:9.0f} B/obj {stat.count_diff / objects:7.1f} blk/obj  {stat}\n"
            )
        f.write("\n== by traceback ==\n")
        for stat in by_trace[:40]:
            f.write(f"\n{stat.size_diff / objects:9.0f} B/obj {stat.count_diff / objects:7.1f} blk/obj\n")
            for frame in stat.traceback.format(most_recent_first=True)[:24]:
                f.write(f"    {frame}\n")


def _short(path: str) -> str:
    for marker in ("site-packages/", "operator/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=16, help="create requests in flight")
    parser.add_argument("--deadlines", type=int, default=None, help="the restart set (default: a tenth)")
    parser.add_argument("--lead", type=float, default=120.0, help="restart set: creation to first deadline")
    parser.add_argument("--spread", type=float, default=60.0, help="restart set: deadlines over this long")
    parser.add_argument("--tracemalloc", action="store_true", help="diff allocations at 1k and the end")
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="NAME=VALUE", help="extra env for kubepam"
    )
    args = parser.parse_args()
    count = args.objects
    deadlines = args.deadlines if args.deadlines is not None else max(2, count // 10)
    main_items, restart_items, n_accounts = plan_objects(count, deadlines)

    work = Path(tempfile.mkdtemp(prefix="kubepam-bench-scale-"))
    plane = ControlPlane(state_dir=work / "cp", bin_dir=ensure_binaries())
    plane.start()
    # both operators run under the probe (bench/traced_operator.py); it traces only with --tracemalloc
    traced = [str(ROOT / "bench" / "traced_operator.py")]
    frames = "12" if args.tracemalloc else "0"
    snaps = {"kubepam": work / "snaps-kubepam", "empty": work / "snaps-empty"}
    for d in snaps.values():
        d.mkdir()
    operator = OperatorProcess(
        plane,
        work / "operator.log",
        # traced, the process is too slow to keep renewing a Lease: it leads alone
        {"KUBEPAM_TRACEMALLOC_DIR": str(snaps["kubepam"]), "KUBEPAM_TRACEMALLOC_FRAMES": frames}
        | ({"KUBEPAM_LEADER_ELECTION": "false"} if args.tracemalloc else {})
        | dict(kv.split("=", 1) for kv in args.operator_env),
        argv=tuple(traced),
    )
    empty: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    try:
        install(lambda *a, **kw: plane.kubectl("admin", *a, **kw))
        operator.start(timeout=120)
        empty = subprocess.Popen(
            [sys.executable, *traced, str(ROOT / "bench" / "empty_operator.py")],
            stdout=(work / "empty.log").open("wb"),
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "KUBECONFIG": str(plane.kubeconfig("admin")),
                "EMPTY_OPERATOR_KINDS": ",".join(PLURALS),
                "EMPTY_OPERATOR_HANDLER": "create",
                "KUBEPAM_TRACEMALLOC_DIR": str(snaps["empty"]),
                "KUBEPAM_TRACEMALLOC_FRAMES": frames,
            },
        )
        t = time.time()
        setup(plane, n_accounts)
        print(
            f"kubepam at {count} objects on the real control plane ({os.cpu_count()} cores; set-up "
            f"{time.time() - t:.0f}s: {(n_accounts + PER_PROJECT - 1) // PER_PROJECT + 2} Projects, "
            f"{n_accounts} shared accounts)"
        )
        seen = Seen()
        watch_client = kubernetes.config.new_client_from_config(str(plane.kubeconfig("admin")))
        watch_api = kubernetes.client.CustomObjectsApi(watch_client)
        for plural in PLURALS:
            threading.Thread(target=watch_kind, args=(watch_api, plural, seen, stop), daemon=True).start()
        time.sleep(10)  # both operators idle after the set-up
        assert operator.proc is not None
        pids = {"kubepam": operator.proc.pid, "empty": empty.pid}
        before = {k: rss_mib(p) for k, p in pids.items()}
        idle = {k: probe(proc, snaps[k]) for k, proc in (("kubepam", operator.proc), ("empty", empty))}
        creator = Creator(plane, args.concurrency, seen)

        # ----- create -> Ready, beside create -> handled ------------------------------------------
        steps = [min(1000, len(main_items)), len(main_items)] if args.tracemalloc else [len(main_items)]
        done_at: dict[int, dict[str, tracemalloc.Snapshot]] = {}
        first = time.time()
        created_upto = 0
        for upto in steps:
            batch = main_items[created_upto:upto]
            creator.create(batch)
            created_upto = upto
            keys = [(i.plural, i.name) for i in main_items[:upto]]
            wait_all(seen, keys, timeout=600 + upto * 0.2)
            if args.tracemalloc:
                time.sleep(10)
                done_at[upto] = {
                    k: snapshot(p, snaps[k]) for k, p in (("kubepam", operator.proc), ("empty", empty))
                }
        keys = [(i.plural, i.name) for i in main_items]
        with seen.lock:
            lat_ours = {
                k: seen.ready[k] - seen.created[k] for k in keys if k in seen.ready and k in seen.created
            }
            lat_empty = {
                k: seen.handled[k] - seen.created[k] for k in keys if k in seen.handled and k in seen.created
            }
            last_ready = max((seen.ready[k] for k in keys if k in seen.ready), default=first)
            last_handled = max((seen.handled[k] for k in keys if k in seen.handled), default=first)

        # ----- the restart set: near deadlines -------------------------------------------------
        t_restart_set = time.time()
        offsets = {
            item.name: args.lead + i * args.spread / max(1, len(restart_items))
            for i, item in enumerate(restart_items)
        }
        creator.create(restart_items, lambda item: f"{t_restart_set + offsets[item.name] - time.time():.3f}s")
        rkeys = [(i.plural, i.name) for i in restart_items]
        wait_all(seen, rkeys, timeout=args.lead)
        time.sleep(10)
        at_n = {k: rss_mib(p) for k, p in pids.items()}
        peak = {k: rss_mib(p, "VmHWM") for k, p in pids.items()}
        if creator.failures:
            print(f"  {len(creator.failures)} creates failed, e.g. {creator.failures[:3]}")

        n_ok = len(lat_ours)
        print(f"\ncreate -> Ready ({n_ok}/{len(keys)} objects, {args.concurrency} creates in flight)")
        ours_rate = len(lat_ours) / max(1e-9, last_ready - first)
        empty_rate = len(lat_empty) / max(1e-9, last_handled - first)
        p = {q: (pct(list(lat_ours.values()), q), pct(list(lat_empty.values()), q)) for q in (0.5, 0.99)}
        print(f"  {'':34} {'p50':>9} {'p99':>9} {'objects/s':>10}")
        for label, col, rate in (
            ("kubepam create -> Ready", 0, ours_rate),
            ("empty kopf create -> handled", 1, empty_rate),
        ):
            print(f"  {label:34} {p[0.5][col] * 1000:7.0f}ms {p[0.99][col] * 1000:7.0f}ms {rate:10.1f}")
        print(
            f"  ratio kubepam/empty: p99 {p[0.99][0] / p[0.99][1]:.2f}x (aim <= 1.2x), "
            f"throughput {empty_rate / ours_rate:.2f}x slower (aim <= 1.2x)"
        )
        for plural in PLURALS:
            vals = [v for k, v in lat_ours.items() if k[0] == plural]
            evals = [v for k, v in lat_empty.items() if k[0] == plural]
            if vals:
                print(
                    f"    {plural:24} n={len(vals):5}  kubepam p50 {pct(vals, 0.5) * 1000:6.0f}ms p99 "
                    f"{pct(vals, 0.99) * 1000:6.0f}ms   empty p50 {pct(evals, 0.5) * 1000:6.0f}ms "
                    f"p99 {pct(evals, 0.99) * 1000:6.0f}ms"
                )
        print(f"\nmemory (RSS) at {len(seen.ready)} objects")
        for k in ("kubepam", "empty"):
            grow = at_n[k] - before[k]
            print(
                f"  {k:8}: {before[k]:6.1f} MiB before -> {at_n[k]:6.1f} MiB ({grow:+6.1f} MiB, "
                f"{grow * 1024 / count:5.1f} KiB/object; peak {peak[k]:6.1f} MiB)"
            )
        ratio = at_n["kubepam"] / at_n["empty"]
        growth = (at_n["kubepam"] - before["kubepam"]) / max(1e-9, at_n["empty"] - before["empty"])
        print(
            f"  ratio kubepam/empty: {ratio:.2f}x (aim <= 1.5x); kubepam {at_n['kubepam']:.0f} MiB "
            f"(aim <= 256 MiB); growth per object {growth:.2f}x"
        )
        for k, proc in (("kubepam", operator.proc), ("empty", empty)):
            if found := probe(proc, snaps[k]):
                start = idle.get(k) or {}
                print(
                    f"  {k:8}: idle before the objects: pymalloc arenas "
                    f"{start.get('pymalloc_arenas_kib', 0) / 1024:6.1f} MiB, malloc in use "
                    f"{start.get('malloc_in_use_kib', 0) / 1024:6.1f} MiB, {start.get('threads')} threads, "
                    f"{start.get('sockets')} sockets"
                )
                print(
                    f"  {k:8}: pymalloc arenas {found.get('pymalloc_arenas_kib', 0) / 1024:6.1f} MiB "
                    f"({found.get('pymalloc_live_kib', 0) / 1024:6.1f} MiB in live objects), "
                    f"malloc in use {found['malloc_in_use_kib'] / 1024:6.1f} MiB, free but kept "
                    f"{found['malloc_free_kib'] / 1024:6.1f} MiB, mmapped "
                    f"{found['malloc_mmapped_kib'] / 1024:5.1f} MiB; {found['threads']} threads, "
                    f"{found['sockets']} sockets; "
                    "RSS after malloc_trim "
                    f"{found['rss_after_trim_kib'] / 1024:6.1f} MiB"
                )
        if args.tracemalloc and len(done_at) == 2:
            lo, hi = sorted(done_at)
            print(f"\ntracemalloc, {lo} -> {hi} objects (allocated and still held, after a full GC)")
            for k in ("kubepam", "empty"):
                report_diff(k, done_at[lo][k], done_at[hi][k], hi - lo, work)
            print(f"  (full lists: {work}/tracemalloc-*.txt)")

        if args.no_restart or not restart_items:
            return
        # ----- restart with every object present ---------------------------------------------------
        first_deadline = t_restart_set + args.lead
        late_by = time.time() - (first_deadline - 5)
        if late_by > 0:
            print(f"  (the restart set was ready {late_by:.0f}s after the planned stop: raise --lead)")
        time.sleep(max(0.0, first_deadline - 5 - time.time()))
        t_stop = time.time()
        operator.stop()
        t_start = time.time()
        operator.start(timeout=300)
        t_ready = time.time()
        last = t_restart_set + args.lead + args.spread
        end = last + 300
        while time.time() < end:
            with seen.lock:
                if all(k in seen.expired for k in rkeys):
                    break
            time.sleep(1)
        time.sleep(5)
        after_restart = rss_mib(operator.proc.pid) if operator.proc else 0.0
        with seen.lock:
            rows = sorted((seen.expires_at[k], seen.expired.get(k)) for k in rkeys if k in seen.expires_at)
        missed = [d for d, e in rows if e is None]
        after = [(d, e - d) for d, e in rows if e is not None and d >= t_start]
        gap = [(d, e - d) for d, e in rows if e is not None and t_stop <= d < t_start]
        before_stop = [(d, e - d) for d, e in rows if e is not None and d < t_stop]
        late = [x for _, x in after]
        on_time = [d + x for d, x in after if x <= 1.0]
        caught_up = next((d for i, (d, _) in enumerate(after) if all(x <= 1.0 for _, x in after[i:])), None)
        print(
            f"\nrestart with {len(seen.ready)} objects ({len(rkeys)} deadlines from "
            f"{first_deadline - t_start:+.0f}s after start, over {args.spread:.0f}s)"
        )
        print(f"  stopped in {t_start - t_stop:.1f}s; ready (broker answers) {t_ready - t_start:.1f}s later")
        if on_time:
            settled = caught_up - t_start if caught_up else float("nan")
            print(
                f"  first on-time expiry {min(on_time) - t_start:.1f}s after start; "
                f"every expiry on time from {settled:.1f}s after start"
            )
        if late:
            print(
                f"  lateness of the {len(late)} deadlines after start: p50 {pct(late, 0.5) * 1000:.0f} ms  "
                f"p99 {pct(late, 0.99) * 1000:.0f} ms (aim <= 1 s)  max {max(late) * 1000:.0f} ms"
            )
        if gap:
            worst = max(x for _, x in gap)
            print(f"  {len(gap)} deadlines fell while stopped: honoured at most {worst:.1f}s late")
        if before_stop:
            print(f"  ({len(before_stop)} fell before the stop)")
        print(f"  missed: {len(missed)} of {len(rkeys)}; RSS after the restart {after_restart:.1f} MiB")
    finally:
        stop.set()
        operator.stop()
        if empty is not None:
            empty.terminate()
            try:
                empty.wait(timeout=20)
            except subprocess.TimeoutExpired:
                empty.kill()
        plane.stop()
        print(f"(work directory: {work})")


if __name__ == "__main__":
    main()
