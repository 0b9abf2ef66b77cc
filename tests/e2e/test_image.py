"""The OCI image that hack/image.sh builds, run as a pod would run it: its root filesystem under runc as
uid 65532 with a read-only root, a tmpfs /tmp, no capabilities, and the ServiceAccount mounts
(a TokenRequest token, ca.crt, namespace) at /var/run/secrets/kubernetes.io/serviceaccount with
KUBERNETES_SERVICE_HOST/PORT pointing at a local API server: the in-cluster login path, the only place it
is exercised. The container has no kubeconfig, so logging in any other way is impossible.

It gets a control plane of its own (not the session's `plane`), so the session's operator, if other
tests started it, never reconciles the same objects. The image is (re)built first: a warm build takes
seconds, and so the test always runs the work tree's code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepam.dev.cluster import ControlPlane, ensure_binaries, free_port, repo_root
from kubepam.dev.install import install
from kubepam.domain.kinds import PLURALS

pytestmark = pytest.mark.e2e
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="building the image and running runc need root")

KINDS = tuple(PLURALS.values())  # every kubepam kind has examples
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
UID = 65532


@dataclass(frozen=True)
class Image:
    layout: Path
    tag: str
    digest: str
    output: str  # what hack/image.sh printed, --check-reproducible's verdict included

    @property
    def ref(self) -> str:
        return f"{self.layout}:{self.tag}"

    def blob(self, digest: str) -> Any:
        return json.loads((self.layout / "blobs" / digest.replace(":", "/", 1)).read_text())


@pytest.fixture(scope="module")
def image() -> Image:
    """The image as hack/image.sh builds it (cached parts make a warm build take seconds), built a second
    time from the same sources by --check-reproducible, whose verdict one test below reads."""
    result = subprocess.run(
        ["bash", str(repo_root() / "hack" / "image.sh"), "--check-reproducible"],
        capture_output=True,
        text=True,
        timeout=900,  # a cold build (Debian root filesystem, wheels) takes about a minute
    )
    lines = result.stdout.splitlines()
    refs = [line for line in lines if line.startswith("oci:")]
    assert refs, f"hack/image.sh built nothing:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    layout, tag = refs[0].removeprefix("oci:").rsplit(":", 1)
    digest = next(line for line in lines if line.startswith("digest ")).split()[1]
    return Image(Path(layout), tag, digest, result.stdout + result.stderr)


@needs_root
def test_the_image_config_runs_kubepam_as_65532_with_labels(image: Image) -> None:
    (entry,) = json.loads((image.layout / "index.json").read_text())["manifests"]
    assert entry["digest"] == image.digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == image.tag
    manifest = image.blob(image.digest)
    assert len(manifest["layers"]) == 2  # the Debian root filesystem, then /opt/kubepam
    config = image.blob(manifest["config"]["digest"])
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    run = config["config"]
    assert run["User"] == f"{UID}:{UID}"
    assert run["Entrypoint"] == ["kubepam"] and run["Cmd"] == ["run"]
    assert any(env.startswith("PATH=/opt/kubepam/bin:") for env in run["Env"])
    labels = run["Labels"]
    for key in ("title", "source", "version", "revision", "created", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.created"] == config["created"]
    commit = labels["org.opencontainers.image.revision"].removesuffix("-dirty")
    known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo_root())
    assert len(commit) == 40 and known.returncode == 0, commit


@needs_root
def test_a_second_build_gives_the_same_digest(image: Image) -> None:
    assert f"reproducible: the second build gave {image.digest} too" in image.output, image.output[-3000:]


DIGEST = "sha256:" + "0123456789abcdef" * 4


def _images(rendered: str) -> list[str]:
    return [
        container["image"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


def test_the_chart_and_manifests_take_repository_tag_and_digest(tmp_path: Path) -> None:
    bin_dir = ensure_binaries()
    chart = str(repo_root() / "charts" / "kubepam")

    def helm(*values: str) -> list[str]:
        sets = [arg for value in values for arg in ("--set", value)]
        cmd = [str(bin_dir / "helm"), "template", "x", chart, "--kube-version", "1.36.3", *sets]
        return _images(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    assert helm() == ["ghcr.io/kubepam/kubepam:0.1.0"]
    assert helm("image.repository=registry.example/pam/kubepam", "image.tag=dev") == [
        "registry.example/pam/kubepam:dev"
    ]
    assert helm("image.repository=registry.example/kubepam", "image.tag=dev", f"image.digest={DIGEST}") == [
        f"registry.example/kubepam@{DIGEST}"
    ]
    refused = subprocess.run(
        [
            str(bin_dir / "helm"),
            "template",
            "x",
            chart,
            "--kube-version",
            "1.36.3",
            "--set",
            "image.digest=v1",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "/image/digest" in refused.stderr

    # manifests/: `kubectl apply -k` with the images entry of manifests/Kustomization.
    copy = tmp_path / "manifests"
    shutil.copytree(repo_root() / "manifests", copy, ignore=shutil.ignore_patterns("examples"))

    def kustomize() -> list[str]:
        cmd = [str(bin_dir / "kubectl"), "kustomize", str(copy)]
        return _images(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    assert kustomize() == ["ghcr.io/kubepam/kubepam:0.1.0"]
    kustomization = yaml.safe_load((copy / "Kustomization").read_text())
    kustomization["images"][0].update(newName="registry.example/kubepam", digest=DIGEST)
    del kustomization["images"][0]["newTag"]
    (copy / "Kustomization").write_text(yaml.safe_dump(kustomization))
    assert kustomize() == [f"registry.example/kubepam@{DIGEST}"]


@pytest.fixture
def own_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(state_dir=tmp_path / "plane", bin_dir=ensure_binaries())
    cp.start()
    try:
        install(
            lambda *args, **kw: cp.kubectl("admin", *args, **kw),
            examples=True,
            requester=lambda *args, **kw: cp.kubectl("alice", *args, **kw),
        )
        yield cp
    finally:
        cp.stop()


def _service_account_files(plane: ControlPlane, directory: Path) -> None:
    """What the kubelet projects into a pod: a bound token (TokenRequest), the cluster CA, the namespace."""
    account = _pod_spec()["serviceAccountName"]
    token = plane.kubectl(
        "admin", "create", "token", account, "-n", "kubepam-system", "--duration=1h"
    ).stdout.strip()
    directory.mkdir()
    (directory / "token").write_text(token)
    shutil.copyfile(plane.state_dir / "pki" / "ca.crt", directory / "ca.crt")
    (directory / "namespace").write_text("kubepam-system")
    for path in directory.iterdir():
        path.chmod(0o644)
    directory.chmod(0o755)


POD_NAME = "kubepam-operator-image-test"


def _pod_spec() -> dict[str, Any]:
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all((repo_root() / "manifests" / "50-deployment.yaml").read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _pod_env(container: dict[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it (the downward API's fields included)."""
    fields = {"metadata.namespace": namespace, "metadata.name": POD_NAME}
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _bundle(image: Image, bundle: Path, sa_dir: Path, env: dict[str, str]) -> None:
    """The image's root filesystem and umoci's runtime config from the image config (user, entrypoint,
    cmd, env, workdir), then what manifests/50-deployment.yaml asks of the pod on top."""
    pod = _pod_spec()
    (container,) = pod["containers"]
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsUser"] == security["runAsGroup"] == UID and security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    (tmp_volume,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert tmp_volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Mi"}
    (tmp_mount,) = [m for m in container["volumeMounts"] if m["name"] == "tmp"]
    bundle.mkdir()
    subprocess.run(
        ["umoci", "raw", "unpack", "--image", image.ref, str(bundle / "rootfs")],
        check=True,
        capture_output=True,
    )
    config_path = bundle / "config.json"
    subprocess.run(
        [
            "umoci",
            "raw",
            "runtime-config",
            "--image",
            image.ref,
            "--rootfs",
            str(bundle / "rootfs"),
            str(config_path),
        ],
        check=True,
        capture_output=True,
    )
    config = json.loads(config_path.read_text())
    process = config["process"]
    assert process["user"]["uid"] == UID and process["user"]["gid"] == UID  # from the image, not set here
    assert process["args"] == ["kubepam", "run"]
    process["terminal"] = False
    assert container["args"] == process["args"][1:]  # the Deployment's args after the image's entrypoint
    process["env"] += [f"{key}={value}" for key, value in env.items()]
    # securityContext: capabilities drop ALL, allowPrivilegeEscalation false, readOnlyRootFilesystem true.
    process["capabilities"] = {key: [] for key in process["capabilities"]}
    process["noNewPrivileges"] = True
    config["root"]["readonly"] = True
    config["mounts"] += [
        # the emptyDir (medium: Memory, sizeLimit: 16Mi) at /tmp
        {
            "destination": tmp_mount["mountPath"],
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=16m"],
        },
        # the projected ServiceAccount volume
        {"destination": SA_DIR, "type": "bind", "source": str(sa_dir), "options": ["rbind", "ro"]},
    ]
    # The host's network namespace (no CNI here), so the API server on 127.0.0.1 is reachable.
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    config["hostname"] = POD_NAME
    config_path.write_text(json.dumps(config, indent=2))


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


@needs_root
def test_the_image_runs_as_a_pod_would_and_reconciles_the_examples(
    image: Image, own_plane: ControlPlane, tmp_path: Path
) -> None:
    # The plain manifests with their Kustomization (the way to name a pushed image) are what the API
    # server takes too.
    kustomized = own_plane.kubectl(
        "admin", "apply", "--server-side", "--dry-run=server", "-k", str(repo_root() / "manifests")
    )
    assert "deployment.apps/kubepam-operator serverside-applied (server dry run)" in kustomized.stdout

    port, console_port = free_port(), free_port()
    _service_account_files(own_plane, tmp_path / "serviceaccount")
    bundle = tmp_path / "bundle"
    _bundle(
        image,
        bundle,
        tmp_path / "serviceaccount",
        {
            # what the kubelet sets in every pod for the `kubernetes` Service
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(own_plane.ports["apiserver"]),
            # what the Deployment sets, but on a free loopback port of this host's network
            **_pod_env(_pod_spec()["containers"][0], "kubepam-system"),
            "KUBEPAM_BROKER_HOST": "127.0.0.1",
            "KUBEPAM_BROKER_PORT": str(port),
            "KUBEPAM_ISSUER": f"http://127.0.0.1:{port}",
            "KUBEPAM_SYNC_GRACE": "1s",
            # the chart's console.inOperator: the console served from the same image and process
            "KUBEPAM_CONSOLE": "true",
            "KUBEPAM_CONSOLE_PORT": str(console_port),
        },
    )
    state = tmp_path / "runc"
    runc = ["runc", "--root", str(state)]
    name = f"kubepam-image-test-{os.getpid()}"
    log_path = tmp_path / "container.log"
    log = log_path.open("wb")
    container = subprocess.Popen(
        [*runc, "run", "--bundle", str(bundle), name],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()

    def logs() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        broker = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while _get(f"{broker}/readyz") != 200:
            assert container.poll() is None, f"the container exited {container.returncode}:\n{logs()}"
            assert time.monotonic() < deadline, f"the broker never became ready:\n{logs()}"
            time.sleep(0.3)

        # What runs is the image's program as 65532, on a read-only root with /tmp writable.
        info = json.loads(subprocess.run([*runc, "state", name], capture_output=True, text=True).stdout)
        pid = info["pid"]
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(UID)] * 4, status
        caps = next(line for line in status.splitlines() if line.startswith("CapEff:")).split()[1]
        assert int(caps, 16) == 0
        assert "/opt/kubepam/bin/kubepam" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
            errors="replace"
        )
        mounts = {
            fields[4]: fields[5].split(",")
            for fields in (line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines())
        }
        # (/var/run is a symlink to /run in Debian, so the mount shows under /run)
        sa_mount = mounts.get(SA_DIR) or mounts[SA_DIR.removeprefix("/var")]
        assert "ro" in mounts["/"] and "rw" in mounts["/tmp"] and "ro" in sa_mount, mounts

        kubectl = own_plane.kubectl
        for kind in KINDS:
            ready = kubectl(
                "admin",
                "wait",
                "--for=condition=Ready",
                "--timeout=90s",
                kind,
                "--all",
                "-A",
                check=False,
                timeout=120,
            )
            assert ready.returncode == 0, f"{kind}: {ready.stderr}\n{logs()}"
            assert "condition met" in ready.stdout, (kind, ready.stdout)
        assert _get(f"{broker}/healthz") == 200
        assert _get(f"{broker}/readyz") == 200
        # The console's templates and static files are in the image: its sign-in page renders.
        console = f"http://127.0.0.1:{console_port}"
        assert _get(f"{console}/login") == 200 and _get(f"{console}/static/console.css") == 200, logs()

        # A pod is stopped with SIGTERM: the operator (PID 1 in its PID namespace) must exit by itself.
        subprocess.run([*runc, "kill", name, "TERM"], check=True, capture_output=True)
        assert container.wait(timeout=30) == 0, logs()
    finally:
        if container.poll() is None:
            subprocess.run([*runc, "kill", name, "KILL"], capture_output=True)
            try:
                container.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(container.pid, signal.SIGKILL)
                container.wait(timeout=10)
        subprocess.run([*runc, "delete", "--force", name], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)  # ~300 MB; pytest keeps the last runs' tmp_path
    listed = subprocess.run([*runc, "list", "-q"], capture_output=True, text=True).stdout.split()
    assert name not in listed
