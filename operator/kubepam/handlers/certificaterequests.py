"""SSHCertificateRequest and X509CertificateRequest handlers: decide once (policy, then the project's
CA signs), write the certificate or the denial reason to status; never re-sign a decided request."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.plans import plan_request, settling
from kubepam.domain.policy import Subject
from kubepam.handlers.registries import CONTROL
from kubepam.handlers.runtime import runtime
from kubepam.handlers.status import apply_plan, ref, utcnow
from kubepam.services.certificates import Denied, NotReady


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
    if isinstance(result, Denied):
        kopf.warn(dict(meta), reason="Denied", message=result.reason)  # type: ignore[arg-type]
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
