"""Semantic checks beyond the CRD schema, per kind: durations that parse and fit their bounds,
unique names, references that make sense. Each problem names its field. Pure; used by the operator
(status Stalled with the problems) and by `kubepam plan` / `kubepam validate` offline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from kubepam.domain.connection import parse_connection
from kubepam.domain.durations import format_duration, parse_duration
from kubepam.domain.errors import SpecError
from kubepam.domain.grants import privileged_namespaces_problem
from kubepam.domain.roles import parse_role

Validator = Callable[[str, str, Mapping[str, Any]], list[str]]


def _duration(
    problems: list[str],
    spec: Mapping[str, Any],
    path: str,
    lo: timedelta | None = None,
    hi: timedelta | None = None,
    prefix: str = "spec.",
) -> timedelta | None:
    node: Any = spec
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return None
    try:
        value = parse_duration(node)
    except ValueError as exc:
        problems.append(f"{prefix}{path}: {exc}")
        return None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        problems.append(
            f"{prefix}{path}: must be between {format_duration(lo or timedelta(0))} and "
            f"{format_duration(hi or timedelta(0))}"
        )
    return value


def _unique(problems: list[str], items: Any, path: str, key: str = "name") -> None:
    seen: set[str] = set()
    for i, item in enumerate(items or ()):
        name = item.get(key) if isinstance(item, Mapping) else None
        if name in seen:
            problems.append(f"spec.{path}[{i}].{key}: duplicate {name!r}")
        if isinstance(name, str):
            seen.add(name)


def _from_spec_error(fn: Callable[[], object]) -> list[str]:
    try:
        fn()
    except SpecError as exc:
        return exc.problems
    return []


def validate_connection(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    return _from_spec_error(lambda: parse_connection(spec))


def validate_role(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    return _from_spec_error(lambda: parse_role(namespace, name, spec))


def validate_access_policy(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    principals = spec.get("principals") or {}
    if not any(principals.get(k) for k in ("users", "groups", "workloadRoles")):
        problems.append("spec.principals: at least one user, group or workload role is required")
    rules = spec.get("rules") or []
    if not rules:
        problems.append("spec.rules: at least one rule is required")
    _unique(problems, rules, "rules")
    for i, rule in enumerate(rules):
        at = f"spec.rules[{i}]."
        _duration(problems, rule, "sshCertificate.ttl", timedelta(seconds=30), timedelta(hours=24), at)
        _duration(problems, rule, "x509Certificate.ttl", timedelta(seconds=30), timedelta(hours=24), at)
        _duration(problems, rule, "checkoutDuration", timedelta(minutes=1), timedelta(hours=24), at)
    return problems


def validate_project(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    default = _duration(problems, spec, "certificates.defaultTTL", timedelta(seconds=30), timedelta(hours=24))
    maximum = _duration(problems, spec, "certificates.maxTTL", timedelta(seconds=30), timedelta(hours=24))
    if default and maximum and default > maximum:
        problems.append("spec.certificates.defaultTTL: must not exceed maxTTL")
    _duration(problems, spec, "certificateAuthority.rotation.overlap", timedelta(0), timedelta(days=30))
    _duration(problems, spec, "jit.maxDuration", timedelta(minutes=1), timedelta(hours=24))
    _unique(problems, spec.get("sharedAccounts"), "sharedAccounts")
    jit = spec.get("jit") or {}
    if jit.get("enabled") and not jit.get("allowedGroups"):
        problems.append("spec.jit.allowedGroups: list at least one group when JIT is enabled")
    if jit.get("enabled") and jit.get("backend") == "postgresql" and not jit.get("postgresql"):
        problems.append("spec.jit.postgresql: required for the postgresql backend")
    if jit.get("enabled") and jit.get("backend", "kubernetes") == "kubernetes":
        problem = privileged_namespaces_problem(
            "spec.jit.namespaces", list(jit.get("namespaces") or []), namespace
        )
        if problem:
            problems.append(problem)
    return problems


def validate_server(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if not spec.get("project"):
        problems.append("spec.project: required")
    if not spec.get("hostname"):
        problems.append("spec.hostname: required")
    return problems


def validate_checkout_policy(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    _duration(problems, spec, "maxDuration", timedelta(seconds=10), timedelta(hours=24))
    _duration(problems, spec, "elevation.approvalWindow", timedelta(seconds=10), timedelta(hours=24))
    if spec.get("scope", "All") != "All" and not spec.get("accounts"):
        problems.append("spec.accounts: list accounts when spec.scope is Include or Exclude")
    targets = list((spec.get("elevation") or {}).get("namespaces") or [])
    if targets and (
        problem := privileged_namespaces_problem("spec.elevation.namespaces", targets, namespace)
    ):
        problems.append(problem)
    return problems


def validate_checkout(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    _duration(problems, spec, "duration", timedelta(seconds=10), timedelta(hours=24))
    if not str(spec.get("reason") or "").strip():
        problems.append("spec.reason: required")
    return problems


JIT_NAME_MAX = 20


def jit_account_name(spec: Mapping[str, Any]) -> str:
    explicit = spec.get("accountName")
    return explicit if isinstance(explicit, str) and explicit else f"{spec.get('owner', '')}_jit"


def validate_jit_account(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    account = jit_account_name(spec)
    if len(account) > JIT_NAME_MAX:
        problems.append(f"spec.accountName: {account!r} is {len(account)} characters; at most {JIT_NAME_MAX}")
    if not account.endswith("_jit"):
        problems.append(f"spec.accountName: {account!r} must end with _jit")
    if len(str(spec.get("reason") or "").strip()) < 3:
        problems.append("spec.reason: a reason of at least 3 characters is required")
    if not spec.get("groups"):
        problems.append("spec.groups: at least one group is required")
    _duration(problems, spec, "duration", timedelta(minutes=1), timedelta(hours=24))
    return problems


_KEY_TYPES = (
    "ssh-ed25519 ",
    "ecdsa-sha2-nistp256 ",
    "ecdsa-sha2-nistp384 ",
    "ecdsa-sha2-nistp521 ",
    "ssh-rsa ",
)


def validate_ssh_certificate_request(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    key = str(spec.get("publicKey") or "").strip()
    if not key.startswith(_KEY_TYPES):
        problems.append(
            "spec.publicKey: must be an OpenSSH public key line (ssh-ed25519, ecdsa-sha2-*, ssh-rsa)"
        )
    if "PRIVATE KEY" in key:
        problems.append("spec.publicKey: looks like a private key; never send private keys")
    _duration(problems, spec, "ttl", timedelta(seconds=30), timedelta(hours=24))
    return problems


def validate_x509_certificate_request(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if "BEGIN CERTIFICATE REQUEST" not in str(spec.get("csr") or ""):
        problems.append("spec.csr: must be a PEM CERTIFICATE REQUEST")
    _duration(problems, spec, "ttl", timedelta(seconds=30), timedelta(hours=24))
    return problems


VALIDATORS: dict[str, Validator] = {
    "WorkloadConnection": validate_connection,
    "WorkloadRole": validate_role,
    "AccessPolicy": validate_access_policy,
    "Project": validate_project,
    "Server": validate_server,
    "CheckoutPolicy": validate_checkout_policy,
    "Checkout": validate_checkout,
    "JitAccount": validate_jit_account,
    "SSHCertificateRequest": validate_ssh_certificate_request,
    "X509CertificateRequest": validate_x509_certificate_request,
}
