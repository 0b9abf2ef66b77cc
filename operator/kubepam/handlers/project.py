"""Project handlers: the CA ring (created once, adopted after restarts, rotated on request) in a Secret,
its public parts in a ConfigMap and status, the enrollment token; retirement of a rotated-out CA is a
deadline in the one scheduler."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import kopf

from kubepam.adapters.kube import KubeError
from kubepam.domain.conditions import Health
from kubepam.domain.errors import SpecError
from kubepam.domain.kinds import GROUP, VERSION
from kubepam.domain.ownership import ForeignObject
from kubepam.domain.plans import Plan, invalid
from kubepam.domain.project import ProjectSpec, parse_project
from kubepam.domain.validation import VALIDATORS
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.runtime import Runtime, runtime
from kubepam.handlers.status import apply_plan, ref, refresh_status
from kubepam.services.projects import publish_jit_settings

PLURAL = "projects"


@kopf.index(GROUP, VERSION, PLURAL, registry=VIEW)
def projects_index(meta: kopf.Meta, spec: kopf.Spec, **_: Any) -> dict[Any, ProjectSpec] | None:
    me = ref(meta)
    try:
        return {(me.namespace, me.name): replace(parse_project(spec), uid=str(meta.get("uid", "")))}
    except SpecError:
        return None  # unusable; reconcile_project's status (plan_project) says why


async def plan_project(rt: Runtime, meta: kopf.Meta | dict[str, Any], spec: Any) -> Plan:
    """Make the CA ring and enrollment token what the spec says, and describe the result."""
    me = ref(meta)
    try:
        project = parse_project(spec)
    except SpecError as exc:
        return invalid(exc.problems)
    uid = str(meta.get("uid", ""))
    try:
        outcome = await rt.cas.reconcile(me.namespace, me.name, uid, project)
        enrollment = await rt.enrollment.reconcile(me.namespace, me.name, uid, project)
        await publish_jit_settings(rt.configmaps, me.namespace, me.name, uid, project.jit)
    except ForeignObject as exc:
        return Plan(Health.STALLED, "ForeignObject", str(exc))
    except KubeError as exc:
        if exc.forbidden:
            return Plan(
                Health.STALLED,
                "NamespaceNotOptedIn",
                f"kubepam may not manage Secrets in namespace {me.namespace}: bind the ClusterRole "
                "kubepam-operator-namespace to its ServiceAccount there",
            )
        raise kopf.TemporaryError(f"API error: {exc}", delay=10) from None
    if outcome.next_change is not None:
        schedule_ca_change(rt, me.namespace, me.name, outcome.next_change)
    ca = outcome.status
    message = f"SSH CA {ca['ssh']['fingerprint']} (generation {ca['generation']})"
    if ca.get("previous"):
        message += f"; previous CA trusted until {ca['previous']['removeAfter']}"
    problems = VALIDATORS["Project"](me.namespace, me.name, spec)
    if problems:  # the CAs are in place; what the spec gets wrong is said, not hidden
        return Plan(Health.STALLED, "InvalidSpec", "; ".join(problems), {"ca": ca, "enrollment": enrollment})
    return Plan(Health.READY, "CAReady", message, {"ca": ca, "enrollment": enrollment})


def schedule_ca_change(rt: Runtime, namespace: str, name: str, when: Any) -> None:
    """At the end of a rotation overlap, drop the previous CA and republish (outside kopf's handlers)."""

    async def retire() -> None:
        await refresh_status(
            rt.objects,
            PLURAL,
            namespace,
            name,
            lambda obj: plan_project(rt, obj.get("metadata") or {}, obj.get("spec") or {}),
        )

    rt.scheduler.schedule(("ca", namespace, name), when, retire)


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.create(GROUP, VERSION, PLURAL, registry=CONTROL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=CONTROL)
async def reconcile_project(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    apply_plan(await plan_project(runtime(memo), meta, spec), patch, status, meta)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=VIEW)
async def project_event(type: str, meta: kopf.Meta, status: kopf.Status, memo: Any, **_: Any) -> None:
    """Every replica: the CA ring the broker signs with, read (never written) from the project's Secret
    once the leader has made it; dropped with the project."""
    me = ref(meta)
    rt = runtime(memo)
    if type == "DELETED":
        rt.cas.forget(me.namespace, me.name)
        rt.scheduler.cancel(("ca", me.namespace, me.name))
        return
    generation = (status.get("ca") or {}).get("generation")
    if generation is not None and rt.cas.loaded_generation(me.namespace, me.name) != generation:
        with contextlib.suppress(KubeError, ForeignObject, ValueError):
            await rt.cas.load(me.namespace, me.name, str(meta.get("uid", "")))
