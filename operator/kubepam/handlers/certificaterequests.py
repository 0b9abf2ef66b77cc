"""SSHCertificateRequest and X509CertificateRequest handlers: decide once (policy, then the project's
CA signs), write the certificate or the denial reason to status; never re-sign a decided request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import kopf

from kubepam.adapters import metrics
from kubepam.adapters.audit import Target
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import plan_request, settling
from kubepam.domain.policy import Subject
from kubepam.domain.server_access import IssuedLogin
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.runtime import runtime
from kubepam.handlers.status import apply_plan, ref, utcnow
from kubepam.services.agents import CHANGES, server_scope
from kubepam.services.certificates import Denied, NotReady, audit_decision


@kopf.index(GROUP, VERSION, "sshcertificaterequests", registry=VIEW)
def issued_logins_index(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> dict[Any, IssuedLogin] | None:
    """Issued SSH certificates by (namespace, server): a group member's account on the server's agent
    lasts while one is valid (domain/server_access.py)."""
    if status.get("phase") != "Issued" or not spec.get("server"):
        return None
    try:
        before = datetime.fromisoformat(str(status.get("validBefore", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
    login = IssuedLogin(
        str(spec.get("requester", "")),
        frozenset(str(g) for g in spec.get("groups") or []),
        tuple(str(p) for p in status.get("principals") or ()),
        before,
    )
    return {(ref(meta).namespace, str(spec["server"])): login}


@kopf.on.event(GROUP, VERSION, "sshcertificaterequests", registry=VIEW)
async def ssh_requests_changed(meta: kopf.Meta, spec: kopf.Spec, **_: Any) -> None:
    if spec.get("server"):
        CHANGES.bump(server_scope(ref(meta).namespace, str(spec["server"])))


def _decide(
    kind: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any
) -> None:
    if status.get("phase") in ("Issued", "Denied"):
        apply_plan(plan_request(status), patch, status, meta)
        return
    rt = runtime(memo)
    me = ref(meta)
    subject = Subject(str(spec.get("requester", "")), frozenset(spec.get("groups") or []))
    try:
        if kind == "ssh":
            result = rt.issuer.ssh(me.namespace, me.name, spec, subject)
        else:
            result = rt.issuer.x509(me.namespace, me.name, spec, subject)
    except NotReady as exc:
        raise kopf.TemporaryError(str(exc), delay=2) from None
    if isinstance(result, Denied) and result.missing_reference and settling(meta, utcnow()):
        # applied together with its Project or Server: wait for them before denying
        raise kopf.TemporaryError(f"waiting: {result.reason}", delay=3)
    new_status = result.status()
    metrics.record_certificate(kind, "request", issued=not isinstance(result, Denied))
    if isinstance(result, Denied):
        kopf.warn(dict(meta), reason="Denied", message=result.reason)  # type: ignore[arg-type]
    kind_name = "SSHCertificateRequest" if kind == "ssh" else "X509CertificateRequest"
    audit_decision(result, Target(kind_name, me.namespace, me.name), subject, spec, str(meta.get("uid", "")))
    patch.status.update(new_status)
    apply_plan(plan_request(new_status), patch, {**status, **new_status}, meta)


@kopf.on.resume(GROUP, VERSION, "sshcertificaterequests", registry=CONTROL)
@kopf.on.create(GROUP, VERSION, "sshcertificaterequests", registry=CONTROL)
def ssh_request(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    _decide("ssh", spec, status, meta, patch, memo)


@kopf.on.resume(GROUP, VERSION, "x509certificaterequests", registry=CONTROL)
@kopf.on.create(GROUP, VERSION, "x509certificaterequests", registry=CONTROL)
def x509_request(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    _decide("x509", spec, status, meta, patch, memo)
