"""Run last in the session (tests/e2e/conftest.py moves it there): every audit line any operator process
of this session wrote, on stdout (its log) and to its audit file (KUBEPAM_AUDIT_FILE, set by the
harness), holds no password, token or private key (GitHub issue 17, docs/audit.md).

What counts as a secret: any JWT-shaped string (subject tokens, kubepam access tokens, ServiceAccount
tokens), a PEM block or ``PRIVATE KEY``, an OpenSSH key line, every PostgreSQL admin password the tests
handed to the operator, and every password, token, key or secret value in the cluster's Secrets now."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from kubepam.adapters.audit import AUDIT_SCHEMA
from kubepam.dev.cluster import ControlPlane
from tests.e2e.harness import PASSWORDS_SEEN, kubectl_json

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}")
MATERIAL = re.compile(r"PRIVATE KEY|-----BEGIN|openssh-key-v1|\bssh-(ed25519|rsa) AAAA")
SECRET_DATA_KEY = re.compile(r"pass|token|key|secret", re.I)
MIN_SECRET_LENGTH = 8  # shorter values (ports, "postgres") are not secrets and would match by chance


def audit_lines(base: Path) -> list[str]:
    """Every audit line under the session's temporary directory: JSON lines of the v1 schema in the
    operator logs, and every line of the audit files (and their rotated copies)."""
    found: list[str] = []
    for path in sorted(base.rglob("*")):
        if not path.is_file():
            continue
        if ".audit.jsonl" in path.name:
            found += [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        elif path.suffix == ".log":
            found += [
                line
                for line in path.read_text(errors="replace").splitlines()
                if line.startswith("{") and AUDIT_SCHEMA in line
            ]
    return found


def cluster_secret_values(plane: ControlPlane) -> set[str]:
    values: set[str] = set()
    for item in kubectl_json(plane, "admin", "get", "secrets", "--all-namespaces")["items"]:
        for key, encoded in (item.get("data") or {}).items():
            if not SECRET_DATA_KEY.search(key):
                continue
            text = base64.b64decode(encoded).decode(errors="replace").strip()
            if len(text) >= MIN_SECRET_LENGTH:
                values.add(text)
                values.update(line for line in text.splitlines() if len(line) >= 40)  # PEM bodies
    return values


def test_no_audit_line_of_the_session_holds_a_secret(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lines = audit_lines(tmp_path_factory.getbasetemp())
    if not lines:
        pytest.skip("no operator wrote an audit line in this session (run with the e2e tests)")
    for line in lines:  # the file sink and stdout write the same v1 lines
        assert json.loads(line)["schema"] == AUDIT_SCHEMA
    secrets = {p for p in PASSWORDS_SEEN if len(p) >= MIN_SECRET_LENGTH} | cluster_secret_values(plane)
    leaks = []
    for number, line in enumerate(lines):
        if JWT.search(line) or MATERIAL.search(line):
            leaks.append((number, "token or key material"))
        leaks += [(number, f"a Secret value of {len(s)} characters") for s in secrets if s in line]
    assert not leaks, f"{len(leaks)} audit line(s) hold secrets: {leaks[:10]}"
