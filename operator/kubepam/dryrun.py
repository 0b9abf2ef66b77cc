"""`kubepam validate --server`: the same kubepam objects judged by the API server itself, one
``kubectl apply --dry-run=server`` each (mutating admission, schema, CEL rules and validating admission
all run; nothing is stored), as the current kubeconfig's user or as ``--as``/``--as-group``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from kubepam.domain.kinds import GROUP
from kubepam.offline import Finding, iter_documents

_PREFIX = 'error when creating "STDIN": '


def kubectl_binary() -> str:
    """kubectl from PATH, else the one the local control plane was built with."""
    found = shutil.which("kubectl")
    if found:
        return found
    from kubepam.dev.cluster import ensure_binaries

    return str(ensure_binaries() / "kubectl")


def impersonation(user: str | None, groups: Sequence[str]) -> list[str]:
    return ([f"--as={user}"] if user else []) + [f"--as-group={g}" for g in groups]


def server_message(stderr: str) -> str:
    """kubectl's error without its "Error from server (...): error when creating ..." framing."""
    text = stderr.strip()
    return text.split(_PREFIX, 1)[1] if _PREFIX in text else text


def server_check(
    paths: Iterable[Path],
    *,
    kubectl: Sequence[str],
    timeout: float = 60,
) -> list[Finding]:
    """Each kubepam object in ``paths`` as the API server answers a dry-run apply of it."""
    findings: list[Finding] = []
    for file, doc in iter_documents(paths):
        if not str(doc.get("apiVersion", "")).startswith(GROUP + "/"):
            continue
        meta = doc.get("metadata") or {}
        name = f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        # JSON, not YAML: kubectl's YAML reads a bare key y as true, which would eat a JWK's "y".
        run = subprocess.run(
            [*kubectl, "apply", "--dry-run=server", "-o", "name", "-f", "-"],
            input=json.dumps(doc, default=str),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        errors = () if run.returncode == 0 else (server_message(run.stderr),)
        findings.append(Finding(str(file), str(doc.get("kind", "")), name, errors, None))
    return findings
