"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager.

Built from Go modules by ``hack/k8s/build.sh`` (cached outside the repository), started on free
loopback ports with RBAC, a token file of the identities in :mod:`kubepam.dev.identities`, a
service-account issuer and signing key (so TokenRequest works), and the namespace, garbage-collector
and service-account controllers (so namespaces delete and ownerReferences are collected). No kubelet:
Deployments are stored and validated, but no pod runs.

Used by ``kubepam dev up|down|env`` and by the e2e pytest session fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kubepam.dev.identities import IDENTITIES, Identity
from kubepam.dev.pki import make_pki

SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
OIDC_USERNAME_PREFIX = "oidc:"  # people from an OIDC issuer never collide with the token-file identities


@dataclass(frozen=True)
class OidcTrust:
    """An OIDC issuer the API server trusts for ID tokens (structured AuthenticationConfiguration): the
    `preferred_username` claim, prefixed, is the username; the `groups` claim gives the groups."""

    issuer: str
    ca_pem: str
    audience: str


def repo_root() -> Path:
    """The kubepam checkout (crds/, hack/, manifests/), from KUBEPAM_REPO or by walking up."""
    env = os.environ.get("KUBEPAM_REPO")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve(), Path.cwd().resolve()]
    for start in candidates:
        for path in (start, *start.parents):
            if (path / "crds").is_dir() and (path / "hack" / "k8s" / "build.sh").is_file():
                return path
    raise RuntimeError("cannot find the kubepam checkout; set KUBEPAM_REPO")


def ensure_binaries() -> Path:
    """Build (or reuse cached) control-plane binaries and helm; returns their directory."""
    script = repo_root() / "hack" / "k8s" / "build.sh"
    out = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ControlPlane:
    state_dir: Path
    bin_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    startup_seconds: float = 0.0
    oidc: OidcTrust | None = None

    # ----- paths -------------------------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def kubeconfig(self, identity: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{identity}.kubeconfig"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    # ----- lifecycle ---------------------------------------------------------------------------
    def start(self, *, controller_manager: bool = True, timeout: float = 60.0) -> None:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("pki", "logs", "kubeconfigs", "etcd"):
            (self.state_dir / sub).mkdir(exist_ok=True)
        make_pki(self.state_dir / "pki")
        self.tokens = {ident.name: secrets.token_urlsafe(32) for ident in IDENTITIES}
        self._write_token_file()
        self.ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm")}
        deadline = started + timeout
        try:
            self._spawn("etcd", self._etcd_args())
            self._wait_http(f"http://127.0.0.1:{self.ports['etcd']}/health", deadline, "etcd")
            self._spawn("kube-apiserver", self._apiserver_args())
            self._wait_http(f"{self.server}/readyz", deadline, "kube-apiserver")
            for ident in IDENTITIES:
                self._write_kubeconfig(ident)
            if controller_manager:
                self._spawn("kube-controller-manager", self._kcm_args())
            self.save()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        # One at a time, in reverse start order: kube-apiserver stops in about a second while etcd is
        # still there, but takes some 12 s when both are told at once (etcd waits for its clients).
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            del self.pids[name]
        state = self.state_dir / "state.json"
        state.unlink(missing_ok=True)

    def alive(self) -> bool:
        return bool(self.pids) and all(_alive(pid) for pid in self.pids.values())

    # ----- persistence (for `kubepam dev up` / `down`) ------------------------------------------
    def save(self) -> None:
        data = {"bin_dir": str(self.bin_dir), "ports": self.ports, "pids": self.pids}
        (self.state_dir / "state.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ControlPlane | None:
        path = state_dir / "state.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(state_dir=state_dir, bin_dir=Path(data["bin_dir"]), ports=data["ports"], pids=data["pids"])

    # ----- helpers -----------------------------------------------------------------------------
    def kubectl(
        self,
        identity: str,
        *args: str,
        input_text: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary("kubectl"), "--kubeconfig", str(self.kubeconfig(identity)), *args]
        result = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.state_dir / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [self.binary(name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pids[name] = proc.pid

    def _wait_http(self, url: str, deadline: float, what: str) -> None:
        ctx = ssl.create_default_context(cafile=str(self.state_dir / "pki" / "ca.crt"))
        headers = {"Authorization": f"Bearer {self.tokens['admin']}"} if url.startswith("https") else {}
        last = ""
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise RuntimeError(f"{name} exited during start-up; see {self.state_dir}/logs/{name}.log")
            try:
                # Only the http(s) URLs this module builds for 127.0.0.1 are opened here.
                req = urllib.request.Request(url, headers=headers)  # noqa: S310
                with urllib.request.urlopen(  # noqa: S310
                    req, timeout=2, context=ctx if url.startswith("https") else None
                ) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready at {url}: {last}")

    def _write_token_file(self) -> None:
        lines = []
        for ident in IDENTITIES:
            groups = ",".join(ident.groups)
            lines.append(f'{self.tokens[ident.name]},{ident.username},{ident.name},"{groups}"')
        path = self.state_dir / "pki" / "tokens.csv"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    def _write_kubeconfig(self, ident: Identity) -> None:
        ca = (self.state_dir / "pki" / "ca.crt").read_text()
        import base64

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubepam-dev",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
                    },
                }
            ],
            "users": [{"name": ident.name, "user": {"token": self.tokens[ident.name]}}],
            "contexts": [{"name": ident.name, "context": {"cluster": "kubepam-dev", "user": ident.name}}],
            "current-context": ident.name,
        }
        path = self.kubeconfig(ident.name)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _etcd_args(self) -> list[str]:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        return [
            "--name=kubepam-dev",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kubepam-dev={peer}",
            "--log-level=warn",
            # Test data only: trade durability for speed.
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=2147483648",
        ]

    def _authentication_config(self, oidc: OidcTrust) -> Path:
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AuthenticationConfiguration",
            "jwt": [
                {
                    "issuer": {
                        "url": oidc.issuer,
                        "audiences": [oidc.audience],
                        "certificateAuthority": oidc.ca_pem,
                    },
                    "claimMappings": {
                        "username": {"claim": "preferred_username", "prefix": OIDC_USERNAME_PREFIX},
                        "groups": {"claim": "groups", "prefix": ""},
                    },
                }
            ],
        }
        path = self.state_dir / "pki" / "authentication.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _apiserver_args(self) -> list[str]:
        pki = self.state_dir / "pki"
        oidc = [f"--authentication-config={self._authentication_config(self.oidc)}"] if self.oidc else []
        return [
            *oidc,
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--api-audiences={SA_ISSUER}",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--cert-dir={pki}",
            "--profiling=false",
            "--enable-priority-and-fairness=false",
            "--endpoint-reconciler-type=none",
            "--event-ttl=1h",
        ]

    def _kcm_args(self) -> list[str]:
        pki = self.state_dir / "pki"
        return [
            f"--kubeconfig={self.kubeconfig('controller-manager')}",
            "--controllers=namespace-controller,garbage-collector-controller,serviceaccount-controller,"
            "serviceaccount-token-controller,clusterrole-aggregation-controller,"
            "validatingadmissionpolicy-status-controller",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kcm']}",
            "--use-service-account-credentials=false",
            "--concurrent-gc-syncs=5",
            "--concurrent-namespace-syncs=5",
        ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
