"""Short-lived certificates: policy decision first, then signing with the project's current CA.

People ask through SSHCertificateRequest / X509CertificateRequest objects (requester and groups
stamped by the API server); workloads ask the broker with a kubepam access token and get a certificate
for their system user ``wl_<role>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from kubepam.adapters import audit
from kubepam.adapters.ca import (
    CertificateError,
    parse_ssh_public_key,
    random_serial,
    sign_client_csr,
    sign_ssh_user,
)
from kubepam.domain.certificates import Validity, key_id, validity
from kubepam.domain.conditions import rfc3339
from kubepam.domain.durations import parse_duration
from kubepam.domain.policy import Capability, Decision, Policy, Request, ServerView, Subject, evaluate
from kubepam.domain.project import ProjectSpec
from kubepam.domain.text import clip
from kubepam.services.projects import CAStore


class PolicyDirectory(Protocol):
    def policies(self, namespace: str) -> Sequence[Policy]: ...
    def server(self, namespace: str, name: str) -> ServerView | None: ...
    def project(self, namespace: str, name: str) -> ProjectSpec | None: ...


@dataclass(frozen=True)
class Issued:
    certificate: str
    principals: tuple[str, ...]
    key_id: str
    serial: int
    valid: Validity
    source: str

    def status(self) -> dict[str, Any]:
        return {
            "phase": "Issued",
            "certificate": self.certificate,
            "principals": list(self.principals),
            "keyId": self.key_id,
            "serial": self.serial,
            "validAfter": rfc3339(self.valid.after),
            "validBefore": rfc3339(self.valid.before),
            "policy": self.source,
            "reason": "",
        }


@dataclass(frozen=True)
class Denied:
    reason: str
    missing_reference: bool = False  # a Project or Server not seen (yet)

    def status(self) -> dict[str, Any]:
        return {"phase": "Denied", "reason": self.reason}


def audit_decision(
    result: Issued | Denied,
    target: audit.Target,
    subject: Subject,
    spec: Mapping[str, Any],
    correlation_id: str,
) -> None:
    """One audit line per certificate decision: issued (key id, serial, principals, validity, rule) or
    denied (the reason). Never the certificate, the public key or the CSR."""
    details: dict[str, Any] = {"project": spec.get("project"), "server": spec.get("server")}
    if isinstance(result, Issued):
        details |= {
            "keyId": result.key_id,
            "serial": str(result.serial),
            "principals": list(result.principals),
            "validAfter": rfc3339(result.valid.after),
            "validBefore": rfc3339(result.valid.before),
            "policy": result.source,
        }
    audit.record(
        audit.Action.CERTIFICATE_ISSUED if isinstance(result, Issued) else audit.Action.CERTIFICATE_DENIED,
        audit.Outcome.SUCCESS if isinstance(result, Issued) else audit.Outcome.DENIED,
        actor=subject.username,
        groups=sorted(subject.groups),
        target=target,
        reason="" if isinstance(result, Issued) else result.reason,
        correlation_id=correlation_id,
        details=details,
    )


class NotReady(Exception):
    """The project's CA is not loaded yet: retry later."""


class MissingReference(Exception):
    """The request names a Project or Server not seen (yet)."""


class InvalidRequest(Exception):
    """A field of the request that cannot be used (the message names it): denied, never retried."""


class CertificateIssuer:
    def __init__(self, directory: PolicyDirectory, cas: CAStore, clock: Callable[[], datetime]) -> None:
        self._directory = directory
        self._cas = cas
        self._clock = clock

    def _decide(
        self, namespace: str, spec: Mapping[str, Any], subject: Subject, capability: Capability
    ) -> tuple[Decision, ProjectSpec | None]:
        project_name = str(spec.get("project", ""))
        project = self._directory.project(namespace, project_name)
        if project is None:
            raise MissingReference(f"no Project {namespace}/{clip(project_name)}")
        server = None
        if spec.get("server"):
            server = self._directory.server(namespace, str(spec["server"]))
            if server is None:
                raise MissingReference(f"no Server {namespace}/{clip(spec['server'])}")
        try:
            ttl = parse_duration(spec["ttl"]) if spec.get("ttl") else None
        except ValueError as exc:
            raise InvalidRequest(f"spec.ttl: {exc}") from None
        request = Request(
            namespace, project_name, capability, server, tuple(spec.get("principals") or ()), ttl
        )
        return evaluate(self._directory.policies(namespace), subject, request, project.limits), project

    def _ca(self, namespace: str, project: str) -> Any:
        ca = self._cas.current(namespace, project)
        if ca is None:
            raise NotReady(f"the CA of project {namespace}/{project} is not ready yet")
        return ca

    def _allowed(
        self, namespace: str, spec: Mapping[str, Any], subject: Subject, capability: Capability
    ) -> tuple[Decision, Any, Validity, int] | Denied:
        """The policy's decision, then what every certificate needs: the CA, validity and a serial."""
        try:
            decision, _ = self._decide(namespace, spec, subject, capability)
        except MissingReference as exc:
            return Denied(str(exc), missing_reference=True)
        except InvalidRequest as exc:
            return Denied(str(exc))
        if not decision.allowed:
            return Denied(decision.reason)
        ca = self._ca(namespace, str(spec["project"]))
        assert decision.ttl is not None
        return decision, ca, validity(self._clock(), decision.ttl), random_serial()

    def ssh(
        self, namespace: str, request_name: str, spec: Mapping[str, Any], subject: Subject
    ) -> Issued | Denied:
        allowed = self._allowed(namespace, spec, subject, Capability.SSH)
        if isinstance(allowed, Denied):
            return allowed
        decision, ca, valid, serial = allowed
        try:
            public_key = parse_ssh_public_key(str(spec.get("publicKey", "")))
        except CertificateError as exc:
            return Denied(str(exc))
        kid = key_id(namespace, subject.username, request_name)
        cert = sign_ssh_user(ca, public_key, decision.principals, valid, kid, serial)
        return Issued(cert, decision.principals, kid, serial, valid, decision.source)

    def workload_ssh(self, namespace: str, role: str, body: Mapping[str, Any], jti: str) -> Issued | Denied:
        """A certificate for ``wl_<role>`` if a policy rule names the workload role for that server."""
        from kubepam.domain.roles import workload_username

        subject = Subject(username=workload_username(role), role=role)
        spec = {
            "project": body["project"],
            "server": body.get("server"),
            "publicKey": body["publicKey"],
            "ttl": body.get("ttl"),
        }
        result = self.ssh(namespace, f"workload-{jti[:12]}", spec, subject)
        audit_decision(result, audit.Target("WorkloadRole", namespace, role), subject, spec, jti)
        return result

    def x509(
        self, namespace: str, request_name: str, spec: Mapping[str, Any], subject: Subject
    ) -> Issued | Denied:
        allowed = self._allowed(namespace, spec, subject, Capability.X509)
        if isinstance(allowed, Denied):
            return allowed
        decision, ca, valid, serial = allowed
        uri = f"kubepam://{namespace}/{spec['project']}/{subject.username}"
        try:
            pem = sign_client_csr(ca, str(spec.get("csr", "")), subject.username, uri, valid, serial)
        except CertificateError as exc:
            return Denied(str(exc))
        return Issued(
            pem,
            (subject.username,),
            key_id(namespace, subject.username, request_name),
            serial,
            valid,
            decision.source,
        )


def workload_request(claims: Mapping[str, Any], body: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, role) for a /v1/ssh/sign body, checked against the access token's roles."""
    from kubepam.domain import oauth
    from kubepam.services.workload_identity import token_role

    namespace, role = token_role(claims, body.get("role"))
    for field in ("project", "publicKey"):
        if not isinstance(body.get(field), str) or not body.get(field):
            raise oauth.invalid_request(f"{field} is required (a string)")
    if body.get("server") is not None and not isinstance(body["server"], str):
        raise oauth.invalid_request("server must be a string (a Server in the role's namespace)")
    ttl = body.get("ttl")
    if ttl is not None:
        if not isinstance(ttl, str):
            raise oauth.invalid_request("ttl must be a string duration like 90s, 5m or 1h")
        try:
            parse_duration(ttl)
        except ValueError as exc:
            raise oauth.invalid_request(f"ttl: {exc}") from None
    return namespace, role
