"""JIT accounts on Kubernetes (a ServiceAccount bound to the chosen ClusterRoles, its token in a Secret
only the owner can read) and on PostgreSQL (a LOGIN role VALID UNTIL the window's end, with the chosen
roles). At the window's end the account is disabled: bindings removed and the ServiceAccount deleted
(every token it had dies with it), or NOLOGIN with a fresh random password. A new reason re-enables it.
Every step posts an Event and one audit log line; the window's end is a deadline in the one scheduler.
"""

from __future__ import annotations

import logging
import secrets as random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from kubepam.adapters import metrics, postgres
from kubepam.adapters.events import Events
from kubepam.adapters.kube import Secrets, owner_reference
from kubepam.adapters.rbac import Rbac
from kubepam.adapters.serviceaccounts import ServiceAccounts
from kubepam.domain import jit
from kubepam.domain.conditions import Health, rfc3339
from kubepam.domain.errors import SpecError
from kubepam.domain.kinds import API_VERSION
from kubepam.domain.ownership import ForeignObject, derived_name
from kubepam.domain.plans import Plan
from kubepam.domain.project import ProjectSpec
from kubepam.services.accounts import Accounts
from kubepam.services.projects import put
from kubepam.services.reconciler import ObjectReconciler, Objects
from kubepam.services.scheduler import Scheduler

log = logging.getLogger("kubepam.jit")
PLURAL = "jitaccounts"
DISABLE_RETRY_SECONDS = 60  # a window over whose backend cannot be reached yet: try again this often
CHANGED_BY = "kubepam.io/changed-by"
CHANGED_BY_GROUPS = "kubepam.io/changed-by-groups"


class Directory(Protocol):
    def project(self, namespace: str, name: str) -> ProjectSpec | None: ...


def _ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def credential_secret_name(obj: Mapping[str, Any]) -> str:
    """The owner's credential Secret (and its Role and RoleBinding), named from the JitAccount's uid."""
    return derived_name("jit", obj["metadata"]["name"], obj["metadata"]["uid"])


def role_owner(obj: Mapping[str, Any]) -> str:
    """The comment a PostgreSQL JIT role carries: which JitAccount (by uid) it belongs to."""
    meta = obj["metadata"]
    return f"kubepam jitaccount {meta['namespace']}/{meta['name']} uid {meta['uid']}"


def grant_name(obj: Mapping[str, Any]) -> str:
    """Base name of the RoleBindings of the account's groups (one per ClusterRole and namespace)."""
    return derived_name("jitgrant", obj["metadata"]["name"], obj["metadata"]["uid"])


def _health(phase: str, message: str) -> Plan:
    if phase == "Failed":
        return Plan(Health.STALLED, "Failed", message)
    if phase == "Pending":
        return Plan(Health.RECONCILING, "Pending", message)
    return Plan(Health.READY, phase, message)


class JitService(ObjectReconciler):
    plural = PLURAL

    def __init__(
        self,
        directory: Directory,
        objects: Objects,
        service_accounts: ServiceAccounts,
        secrets: Secrets,
        rbac: Rbac,
        accounts: Accounts,
        scheduler: Scheduler,
        events: Events,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(objects, scheduler, events, clock)
        self._dir = directory
        self._sas = service_accounts
        self._secrets = secrets
        self._rbac = rbac
        self._accounts = accounts

    def _health(self, status: Mapping[str, Any]) -> Plan:
        return _health(str(status.get("phase") or "Pending"), str(status.get("message") or ""))

    def due(self, obj: Mapping[str, Any]) -> datetime | None:
        status = obj.get("status") or {}
        return _ts(status.get("expiresAt")) if status.get("phase") == "Active" else None

    def resume(self, obj: Mapping[str, Any]) -> None:
        """At start-up (kopf's resume: the spec is as last handled). An enabled account only waits for the
        end of its window: armed from its status without a read, so ten thousand of them cost no API
        call; anything else is reconciled from the queue."""
        meta, status = obj["metadata"], obj.get("status") or {}
        when = self.due(obj)
        generation = int(meta.get("generation") or 0)
        if when is None or jit.needs_activation(
            status.get("phase"), generation, status.get("activatedGeneration")
        ):
            self.enqueue(meta["namespace"], meta["name"])
        else:
            self.wake(meta["namespace"], meta["name"], when)  # a window already over: at once

    async def _record_failure(self, obj: dict[str, Any], message: str, attempts: int, delay: float) -> None:
        await self._write(obj, {"message": f"retrying in {delay:.0f}s (attempt {attempts}): {message}"})

    def _removal(self, obj: Mapping[str, Any]) -> tuple[jit.JitSettings | None, str]:
        """How to take the account away: the project's settings widened by the recorded grant."""
        settings, problem = self._settings(obj)
        return jit.removal_settings(settings, (obj.get("status") or {}).get("grant")), problem

    async def remove(self, obj: Mapping[str, Any]) -> None:
        """The JitAccount is being deleted: take the account out of its backend (finalizer)."""
        settings, problem = self._removal(obj)
        account = jit.account_name(obj["spec"])
        if settings is not None:
            await self._disable(obj, settings, account, drop=True)
        elif (obj.get("status") or {}).get("phase") == "Active":
            # Not held up forever (a finalizer that never ends blocks the namespace): the credential
            # lapses at the window's end on its own (VALID UNTIL, the token's expiry); say what is left.
            await self._events.emit(
                obj,
                "LeftInBackend",
                f"{account} could not be removed from its backend: {problem}",
                warning=True,
            )
        self.forget(obj["metadata"]["namespace"], obj["metadata"]["name"])
        await self._events.emit(
            obj,
            "Removed",
            f"{account} removed from its backend",
            audit={
                "owner": obj["spec"].get("owner"),
                "account": account,
                "actor": (obj["metadata"].get("annotations") or {}).get(CHANGED_BY),
            },
        )

    # ----- steps --------------------------------------------------------------------------------
    def _settings(self, obj: Mapping[str, Any]) -> tuple[jit.JitSettings | None, str]:
        ns, project_name = obj["metadata"]["namespace"], obj["spec"].get("project", "")
        project = self._dir.project(ns, project_name)
        if project is None:
            return None, f"no Project {ns}/{project_name}"
        try:
            return jit.parse_settings(project.jit, ns), ""
        except SpecError as exc:
            return None, "; ".join(exc.problems)

    async def _step(self, obj: dict[str, Any]) -> None:
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        now = self._clock()
        phase = status.get("phase")
        generation = int(meta.get("generation") or 0)
        settings, problem = self._settings(obj)
        notes = meta.get("annotations") or {}
        actor = notes.get(CHANGED_BY, "")
        actor_groups = [g for g in notes.get(CHANGED_BY_GROUPS, "").split(",") if g]
        if spec.get("disabled"):
            if phase == "Active":
                await self._end_window(
                    obj,
                    settings,
                    problem,
                    now,
                    by=actor or "kubepam",
                    why="disabled early",
                    generation=generation,
                )
            elif phase != "Disabled" or status.get("activatedGeneration") != generation:
                await self._write(
                    obj,
                    {
                        "phase": "Disabled",
                        "activatedGeneration": generation,
                        "message": "disabled (spec.disabled); set it to false with a new reason to enable",
                    },
                )
            return
        if jit.needs_activation(phase, generation, status.get("activatedGeneration")):
            if settings is None and self._settling(obj):  # applied together with its Project: wait for it
                changes = await self._wait_for_reference(obj, problem)
                if changes:
                    await self._write(obj, {"phase": "Pending", **changes})
                return
            try:
                request = jit.check(spec, settings, spec.get("project", ""), actor, actor_groups)
            except SpecError as exc:
                message = problem or "; ".join(exc.problems)
                if phase == "Active":  # keep the current window; refuse the change
                    await self._write(obj, {"message": f"change refused: {message}"})
                else:
                    await self._write(obj, {"phase": "Failed", "message": message})
                    await self._events.emit(
                        obj,
                        "Refused",
                        message,
                        warning=True,
                        audit={"actor": actor, "owner": spec.get("owner"), "why": message},
                    )
                return
            history = status.get("history") or []
            if jit.same_reason_again(history, request.reason, phase):
                await self._write(
                    obj,
                    {
                        "message": "give a new reason to re-enable this account",
                        "activatedGeneration": generation,
                    },
                )
                return
            assert settings is not None
            start = now.replace(microsecond=0)  # status keeps whole seconds: so does the deadline
            window = jit.Window(start, (start + request.duration).replace(microsecond=0))
            grant = jit.grant_record(settings, request.groups, status.get("grant"))
            if status.get("grant") != grant:  # intent first: what is granted can always be taken away
                await self._write(obj, {"grant": grant})
            secret = await self._enable(obj, settings, request, window)
            entry = {
                "by": actor or request.owner,
                "reason": request.reason,
                "groups": list(request.groups),
                "from": rfc3339(window.start),
                "until": rfc3339(window.end),
            }
            await self._write(
                obj,
                {
                    "phase": "Active",
                    "accountName": request.account,
                    "activatedAt": rfc3339(window.start),
                    "expiresAt": rfc3339(window.end),
                    "secretName": secret,
                    "activatedGeneration": generation,
                    "history": jit.with_history(history, entry),
                    "grant": grant,
                    "message": f"enabled until {rfc3339(window.end)} with {', '.join(request.groups)}",
                },
            )
            await self._events.emit(
                obj,
                "Enabled" if phase != "Disabled" else "Reenabled",
                f"{request.account} enabled until {rfc3339(window.end)}",
                audit={
                    "actor": entry["by"],
                    "owner": request.owner,
                    "reason": request.reason,
                    "groups": list(request.groups),
                    "from": entry["from"],
                    "until": entry["until"],
                    "account": request.account,
                },
            )
            self.wake(meta["namespace"], meta["name"], window.end)
            return
        if phase == "Active":
            expires = _ts(status.get("expiresAt"))
            if expires is not None and now >= expires:
                await self._end_window(obj, settings, problem, now, by="kubepam", why="window ended")
            elif expires is not None:
                self.wake(meta["namespace"], meta["name"], expires)

    async def _end_window(
        self,
        obj: dict[str, Any],
        settings: jit.JitSettings | None,
        problem: str,
        now: datetime,
        *,
        by: str,
        why: str,
        generation: int | None = None,
    ) -> None:
        """Disable an Active account: at its window's end, or earlier when its owner sets spec.disabled
        (then `generation` is recorded, so that change is not taken for a request to re-enable)."""
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        removal = jit.removal_settings(settings, status.get("grant"))
        if removal is None:
            # Nothing says how to reach the backend: keep trying, and say so.
            at = rfc3339(now) if generation is not None else status.get("expiresAt")
            message = f"{why} at {at}; cannot disable the account yet: {problem}"
            if status.get("message") != message:
                await self._write(obj, {"message": message})
            self.wake(meta["namespace"], meta["name"], now + timedelta(seconds=DISABLE_RETRY_SECONDS))
            return
        account = str(status.get("accountName") or jit.account_name(spec))
        await self._disable(obj, removal, account, drop=False)
        metrics.record_jit_disabled(
            removal.backend,
            early=generation is not None,
            deadline=_ts(status.get("expiresAt")),
            done=self._clock(),
        )
        changes: dict[str, Any] = {
            "phase": "Disabled",
            "message": f"disabled at {rfc3339(now)} ({why}); give a new reason and duration to re-enable",
        }
        if generation is not None:
            changes |= {"activatedGeneration": generation, "expiresAt": rfc3339(now.replace(microsecond=0))}
        await self._write(obj, changes)
        await self._events.emit(
            obj,
            "Disabled",
            f"{account} disabled ({why})",
            audit={
                "actor": by,
                "owner": spec.get("owner"),
                "account": account,
                "reason": why,
                "groups": list(spec.get("groups") or []),
                "until": changes.get("expiresAt", status.get("expiresAt")),
            },
        )

    def _owner(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return owner_reference(API_VERSION, "JitAccount", meta["name"], meta["uid"])

    async def _deliver(self, obj: Mapping[str, Any], data: Mapping[str, bytes]) -> str:
        """The credential in a Secret only the owner can read."""
        ns, name, owner_user = obj["metadata"]["namespace"], credential_secret_name(obj), obj["spec"]["owner"]
        await put(self._secrets, ns, name, data, self._owner(obj))
        await self._rbac.grant_secret_read(ns, name, name, owner_user, self._owner(obj))
        return name

    async def _enable(
        self, obj: Mapping[str, Any], settings: jit.JitSettings, request: jit.Request, window: jit.Window
    ) -> str:
        ns = obj["metadata"]["namespace"]
        seconds = int((window.end - window.start).total_seconds())
        if settings.backend == "postgresql":
            if settings.postgresql is None:
                raise RuntimeError("spec.jit.postgresql is required for the postgresql backend")
            server = await self._accounts.server(ns, settings.postgresql)
            password = random.token_urlsafe(24)
            stale = [g for g in settings.allowed_groups if g not in request.groups]
            await postgres.ensure_login_role(
                server, request.account, password, request.groups, window.end, role_owner(obj)
            )
            if stale:
                await postgres.revoke(server, request.account, stale)
            data = {
                "username": request.account.encode(),
                "password": password.encode(),
                "host": str(settings.postgresql.get("host", "")).encode(),
                "port": str(settings.postgresql.get("port", 5432)).encode(),
                "validUntil": rfc3339(window.end).encode(),
            }
            return await self._deliver(obj, data)
        sa = jit.service_account_name(request.account)
        await self._sas.ensure(ns, sa, self._owner(obj), {})
        subject = {"kind": "ServiceAccount", "name": sa, "namespace": ns}
        history = (obj.get("status") or {}).get("history") or []
        previous = set(history[-1].get("groups") or []) if history else set()
        dropped = [g for g in previous if g not in request.groups]  # only groups an earlier window granted
        grant = grant_name(obj)
        for target in settings.namespaces:
            if dropped:
                await self._rbac.unbind(target, grant, dropped, self._owner(obj))
            await self._rbac.bind_cluster_roles(
                target, grant, request.groups, subject, self._owner(obj), owner_namespace=ns
            )
        token, expiration = await self._sas.token(ns, sa, seconds)
        data = {
            "token": token.encode(),
            "serviceAccount": f"system:serviceaccount:{ns}:{sa}".encode(),
            "namespaces": ",".join(settings.namespaces).encode(),
            "expiresAt": rfc3339(window.end).encode(),
            "tokenExpiration": expiration.encode(),
        }
        return await self._deliver(obj, data)

    async def _disable(
        self, obj: Mapping[str, Any], settings: jit.JitSettings, account: str, *, drop: bool
    ) -> None:
        ns = obj["metadata"]["namespace"]
        if settings.backend == "postgresql" and settings.postgresql is not None:
            server = await self._accounts.server(ns, settings.postgresql)
            try:
                if drop:
                    await postgres.drop_role(server, account, role_owner(obj))
                else:
                    await postgres.disable_login(server, account, random.token_urlsafe(24), role_owner(obj))
            except postgres.ForeignRole as exc:  # never ours: leave it alone, and say so
                await self._events.emit(obj, "LeftAlone", str(exc), warning=True)
        else:
            sa = jit.service_account_name(account)
            for target in settings.namespaces:
                await self._rbac.unbind(target, grant_name(obj), settings.allowed_groups, self._owner(obj))
            try:  # every token of the account is useless from here on
                await self._sas.delete(ns, sa, self._owner(obj))
            except ForeignObject as exc:  # never ours (another JitAccount's, or nobody's): leave it alone
                await self._events.emit(obj, "LeftAlone", str(exc), warning=True)
        secret = credential_secret_name(obj)
        await self._secrets.delete(ns, secret, self._owner(obj))
        await self._rbac.revoke_secret_read(ns, secret, self._owner(obj))
