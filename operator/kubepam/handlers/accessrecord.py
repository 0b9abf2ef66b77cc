"""History records (leader only): every Checkout, JitAccount and certificate request event is looked at
for something that finished (services/records.py writes its AccessRecord once), and every AccessRecord
the operator wrote gets its retention deadline in the scheduler. Event handlers only: kopf keeps no
state on these objects for them (no annotations, no finalizers)."""

from __future__ import annotations

from typing import Any

import kopf

from kubepam.domain import records
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.handlers.registries import CONTROL
from kubepam.handlers.runtime import runtime


@kopf.on.event(GROUP, VERSION, "checkouts", registry=CONTROL)
async def checkout_record(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime(memo).records.observe_checkout(dict(body), deleted=type == "DELETED")


@kopf.on.event(GROUP, VERSION, "jitaccounts", registry=CONTROL)
async def jit_records(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime(memo).records.observe_jit(dict(body), deleted=type == "DELETED")


@kopf.on.event(GROUP, VERSION, "sshcertificaterequests", registry=CONTROL)
async def ssh_request_record(body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime(memo).records.observe_certificate("SSHCertificateRequest", dict(body))


@kopf.on.event(GROUP, VERSION, "x509certificaterequests", registry=CONTROL)
async def x509_request_record(body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime(memo).records.observe_certificate("X509CertificateRequest", dict(body))


@kopf.on.event(GROUP, VERSION, records.PLURAL, registry=CONTROL, labels={records.MANAGED_BY: records.MANAGER})
async def access_record(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    rt = runtime(memo)
    if type == "DELETED":
        rt.records.gone(dict(body))
    else:
        rt.records.seen(dict(body))
