"""`kubepam ssh SERVER`: ask for a short-lived certificate with plain Kubernetes objects, wait for it,
write it beside the key (``<key>-cert.pub``, where ssh looks for it) and run ssh.

The request goes through the API server as the current kubeconfig user, so who asks is the API
server's word; the certificate is a public document, the private key never leaves this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepam.client.errors import api_message

GROUP, VERSION = "kubepam.io", "v1alpha1"


class SSHError(Exception):
    """Why no certificate or no session; safe to print."""


@dataclass(frozen=True)
class Target:
    namespace: str
    server: str
    project: str
    host: str
    port: int


def _api() -> Any:
    import kubernetes

    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.CustomObjectsApi()


def target(api: Any, namespace: str, server: str) -> Target:
    from kubernetes.client.exceptions import ApiException

    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "servers", server)
    except ApiException as exc:
        raise SSHError(f"cannot read Server {namespace}/{server}: {exc.reason}") from None
    spec = obj.get("spec") or {}
    host = (spec.get("addresses") or [spec.get("hostname")])[0]
    return Target(namespace, server, str(spec.get("project")), str(host), int(spec.get("sshPort") or 22))


def request_certificate(
    api: Any, tgt: Target, public_key: str, *, ttl: str | None, principals: Sequence[str], timeout: float
) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    spec: dict[str, Any] = {
        "project": tgt.project,
        "server": tgt.server,
        "publicKey": public_key.strip(),
        "requester": "stamped-by-the-api-server",
    }
    if ttl:
        spec["ttl"] = ttl
    if principals:
        spec["principals"] = list(principals)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SSHCertificateRequest",
        "metadata": {"generateName": f"{tgt.server}-", "namespace": tgt.namespace},
        "spec": spec,
    }
    try:
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, tgt.namespace, "sshcertificaterequests", body
        )
    except ApiException as exc:
        raise SSHError(f"the API server refused the request: {api_message(exc)}") from None
    name = created["metadata"]["name"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, tgt.namespace, "sshcertificaterequests", name)
        status = obj.get("status") or {}
        if status.get("phase") == "Issued":
            return dict(status)
        if status.get("phase") == "Denied":
            raise SSHError(f"denied: {status.get('reason')}")
        time.sleep(0.25)
    raise SSHError(
        f"no certificate after {timeout:.0f}s (request {tgt.namespace}/{name}); is the operator running?"
    )


def run(
    namespace: str,
    server: str,
    key: Path,
    *,
    login: str | None,
    ttl: str | None,
    principals: Sequence[str],
    timeout: float,
    ssh_options: Sequence[str],
    command: Sequence[str],
) -> int:
    public = key.with_name(key.name + ".pub")
    if not key.is_file() or not public.is_file():
        raise SSHError(f"no key pair at {key} (create one with: ssh-keygen -t ed25519 -f {key})")
    api = _api()
    tgt = target(api, namespace, server)
    status = request_certificate(
        api, tgt, public.read_text(), ttl=ttl, principals=principals, timeout=timeout
    )
    cert = key.with_name(key.name + "-cert.pub")
    cert.write_text(status["certificate"] + "\n")
    user = login or status["principals"][0]
    names = ", ".join(status["principals"])
    sys.stderr.write(f"certificate {status['keyId']} valid until {status['validBefore']} for {names}\n")
    ssh = shutil.which("ssh") or "ssh"
    options = [f"-o{opt}" for opt in ssh_options]
    argv = [
        ssh,
        "-i",
        str(key),
        "-o",
        f"CertificateFile={cert}",
        "-o",
        "IdentitiesOnly=yes",
        "-p",
        str(tgt.port),
        *options,
        f"{user}@{tgt.host}",
        *command,
    ]
    return subprocess.call(argv, env=os.environ.copy())
