"""Checkouts of shared accounts by workloads, through the broker: a CI job with a kubepam access token
asks ``POST /v1/checkouts`` for an account that an AccessPolicy grants one of its WorkloadRoles, gets
the credential in that one answer, and checks in with ``DELETE /v1/checkouts/<namespace>/<name>``.

This module owns the broker's side only: checking the request against the verified token, creating the
Checkout (requester ``workload:<ns>/<connection>:<sub>`` from the token, ``spec.workloadRole``: only the
operator may write either, manifests/40-admission-policies.yaml), waiting a bounded time for the
operator's decision, and handing the credential out at most once per checkout (the hand-out is claimed
with an annotation written under the API server's optimistic concurrency, so neither two calls nor two
replicas both deliver it). Deciding, exclusivity, expiry and rotation at check-in are the ordinary
Checkout state machine (services/checkouts.py); a workload's checkout differs only in that no Role lets
anyone read its credential Secret (there is no Kubernetes user to bind).

A checkout is the caller's when its ``spec.requester`` is the token's ``sub``; any other (or a missing
one) is 404 ``not_found``, the same answer either way, so a token learns nothing about other checkouts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from secrets import token_hex
from typing import Any, Protocol

from kubepam.adapters.kube import KubeError, SecretData
from kubepam.domain import oauth
from kubepam.domain.checkout import FINAL_PHASES, Phase
from kubepam.domain.conditions import rfc3339
from kubepam.domain.durations import parse_duration
from kubepam.domain.kinds import API_VERSION
from kubepam.domain.text import clip
from kubepam.services.checkouts import PLURAL, WORKLOAD_PREFIX, credential_secret_name
from kubepam.services.workload_identity import token_role

log = logging.getLogger("kubepam.broker.checkouts")

DELIVERED = "kubepam.io/credential-delivered"  # annotation: when the broker handed the credential out
TOKEN_ID = "kubepam.io/access-token-jti"  # annotation: the access token that asked (audit)
VIA = "kubepam.io/requested-via"  # label: broker
NAME_PREFIX = "wl-"
FIELDS = ("role", "project", "account", "duration", "reason")
MIN_DURATION, MAX_DURATION = timedelta(seconds=10), timedelta(hours=24)  # as crds/checkout.yaml
MAX_REQUESTER = 253  # spec.requester's maxLength
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SETTLED = FINAL_PHASES | {Phase.ACTIVE.value}


class CheckoutObjects(Protocol):
    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> None: ...
    async def patch(self, plural: str, namespace: str, name: str, body: Mapping[str, Any]) -> None: ...


class SecretReader(Protocol):
    async def get(self, namespace: str, name: str) -> SecretData | None: ...


@dataclass(frozen=True)
class WorkloadCheckoutRequest:
    namespace: str  # the role's namespace: the Checkout, its Project and account live there
    role: str
    project: str
    account: str
    reason: str
    duration: str | None


class NotSettled(Exception):
    """The operator has not decided within the bound (e.g. approvers are asked): 503, naming the checkout
    so the job can ask for its credential later (``POST /v1/checkouts/<ns>/<name>/credential``)."""

    def __init__(self, namespace: str, name: str, phase: str, message: str) -> None:
        self.namespace, self.name, self.phase, self.message = namespace, name, phase, message
        super().__init__(f"checkout {namespace}/{name} is {phase}")

    def body(self) -> dict[str, Any]:
        return {
            "error": "temporarily_unavailable",
            "error_description": (
                f"checkout {self.namespace}/{self.name} is {self.phase}"
                + (f" ({clip(self.message, 200)})" if self.message else "")
                + f"; ask for its credential with POST /v1/checkouts/{self.namespace}/{self.name}/credential"
            ),
            "checkout": self.name,
            "namespace": self.namespace,
            "phase": self.phase,
        }


def _text(body: Mapping[str, Any], field: str, longest: int, *, required: bool = True) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise oauth.invalid_request(f"{field} is required (a non-empty string)")
    if len(value) > longest:
        raise oauth.invalid_request(f"{field} is longer than {longest} characters")
    return value


def parse_request(claims: Mapping[str, Any], body: Mapping[str, Any]) -> WorkloadCheckoutRequest:
    """The JSON body of ``POST /v1/checkouts`` checked against the verified token; RFC 6749 refusals."""
    unknown = sorted(k for k in body if k not in FIELDS)
    if unknown:
        raise oauth.invalid_request(f"unknown field {clip(unknown[0])} (the fields are: {', '.join(FIELDS)})")
    namespace, role = token_role(claims, body.get("role"))
    project = _text(body, "project", 253)
    account = _text(body, "account", 63)
    reason = _text(body, "reason", 1024)
    duration = _text(body, "duration", 32, required=False)
    if duration is not None:
        try:
            length = parse_duration(duration)
        except ValueError as exc:
            raise oauth.invalid_request(f"duration: {exc}") from None
        if not MIN_DURATION <= length <= MAX_DURATION:
            raise oauth.invalid_request("duration must be between 10s and 24h")
    assert project is not None and account is not None and reason is not None
    return WorkloadCheckoutRequest(namespace, role, project, account, reason, duration)


def requester(claims: Mapping[str, Any]) -> str:
    """The token's ``sub`` (``workload:<ns>/<connection>:<sub>``), as a Checkout's spec.requester."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(WORKLOAD_PREFIX):
        raise oauth.invalid_token("the access token has no workload subject", "invalid")
    if len(sub) > MAX_REQUESTER:
        raise oauth.access_denied(
            f"the token's subject is longer than {MAX_REQUESTER} characters, more than a Checkout's "
            "spec.requester holds",
            "subject_too_long",
        )
    return sub


def _api_message(exc: KubeError) -> str:
    """The API server's own message (its Status body's ``message``) from a KubeError."""
    text = str(exc).split(": ", 1)[-1]
    try:
        status = json.loads(text)
    except ValueError:
        return text
    return str(status.get("message") or text) if isinstance(status, dict) else text


def _random_name() -> str:
    return NAME_PREFIX + token_hex(5)


class WorkloadCheckouts:
    def __init__(
        self,
        objects: CheckoutObjects,
        secrets: SecretReader,
        clock: Callable[[], datetime],
        *,
        wait: float = 15.0,
        names: Callable[[], str] = _random_name,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self._secrets = secrets
        self._clock = clock
        self._wait = wait
        self._names = names
        self._sleep = sleep
        self._monotonic = monotonic

    # ----- POST /v1/checkouts ---------------------------------------------------------------------
    async def checkout(self, claims: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Checkout, wait for the operator's decision, and hand out the credential."""
        ask = parse_request(claims, body)
        who = requester(claims)
        name = await self._create(ask, who, str(claims.get("jti", "")))
        log.info(
            "workload checkout %s/%s of %s/%s by %s (role %s)",
            ask.namespace,
            name,
            ask.project,
            ask.account,
            who,
            ask.role,
        )
        return await self._settle_and_deliver(ask.namespace, name)

    async def _create(self, ask: WorkloadCheckoutRequest, who: str, jti: str) -> str:
        spec: dict[str, Any] = {
            "project": ask.project,
            "account": ask.account,
            "requester": who,
            "workloadRole": ask.role,
            "reason": ask.reason,
        }
        if ask.duration is not None:
            spec["duration"] = ask.duration
        for _ in range(3):  # a name taken (40 random bits) is tried again with another
            name = self._names()
            body = {
                "apiVersion": API_VERSION,
                "kind": "Checkout",
                "metadata": {
                    "name": name,
                    "namespace": ask.namespace,
                    "labels": {VIA: "broker"},
                    "annotations": {TOKEN_ID: jti[:128]},
                },
                "spec": spec,
            }
            try:
                await self._objects.create(PLURAL, ask.namespace, body)
                return name
            except KubeError as exc:
                if exc.conflict:
                    continue
                raise self._refusal(exc, ask.namespace) from None
        raise oauth.temporarily_unavailable("could not find a free checkout name; retry")

    @staticmethod
    def _refusal(exc: KubeError, namespace: str) -> oauth.OAuthError:
        message = clip(_api_message(exc), 300)
        if exc.forbidden:
            return oauth.access_denied(
                f"the operator may not create a Checkout in namespace {namespace} (has it opted in to "
                f"kubepam?): {message}",
                "checkout_forbidden",
            )
        if exc.status in (400, 422):
            return oauth.invalid_request(f"the API server refused the checkout: {message}")
        return oauth.temporarily_unavailable(
            f"the API server did not take the checkout ({exc.status}); retry"
        )

    async def _settle(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Checkout once its phase is Active or final, or as it is when the wait is over (polled, with
        a growing pause; every read is a thread's work, the event loop never waits on it)."""
        deadline = self._monotonic() + self._wait
        pause = 0.1
        while True:
            obj = await self._objects.get(PLURAL, namespace, name)
            phase = ((obj or {}).get("status") or {}).get("phase")
            left = deadline - self._monotonic()
            if obj is None or phase in SETTLED or left <= 0:
                return obj
            await self._sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

    async def _settle_and_deliver(self, namespace: str, name: str) -> dict[str, Any]:
        obj = await self._settle(namespace, name)
        if obj is None:
            raise oauth.not_found(f"checkout {namespace}/{name} is gone")
        status = obj.get("status") or {}
        phase = str(status.get("phase") or Phase.PENDING.value)
        message = str(status.get("message") or "")
        if phase == Phase.ACTIVE.value:
            return await self._deliver(obj)
        if phase == Phase.DENIED.value:
            raise oauth.access_denied(f"checkout {namespace}/{name} denied: {message}", "checkout_denied")
        if phase in FINAL_PHASES:
            raise oauth.access_denied(f"checkout {namespace}/{name} is {phase}: {message}", "checkout_ended")
        raise NotSettled(namespace, name, phase, message)

    async def _deliver(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The credential, once: read it, then claim the hand-out (a conflict re-reads and tries again)."""
        meta = obj["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        secret = credential_secret_name(name, uid)  # derived, never a name read back from status
        stored = await self._secrets.get(ns, secret)
        if stored is None or not stored.owned_by(uid):
            raise oauth.access_denied(f"checkout {ns}/{name} holds no credential now", "checkout_ended")
        for _ in range(5):
            annotations = meta.get("annotations") or {}
            if DELIVERED in annotations:
                raise oauth.access_denied(
                    f"the credential of checkout {ns}/{name} was handed out at {annotations[DELIVERED]}; "
                    "it is returned once (check in and check out again for another)",
                    "credential_delivered",
                )
            if (obj.get("status") or {}).get("phase") != Phase.ACTIVE.value:
                raise oauth.access_denied(f"checkout {ns}/{name} is no longer Active", "checkout_ended")
            claim = {
                "metadata": {
                    "resourceVersion": meta.get("resourceVersion"),
                    "annotations": {DELIVERED: rfc3339(self._clock())},
                }
            }
            try:
                await self._objects.patch(PLURAL, ns, name, claim)
                break
            except KubeError as exc:
                if exc.not_found:
                    raise oauth.not_found(f"checkout {ns}/{name} is gone") from None
                if not exc.conflict:
                    raise
            fresh = await self._objects.get(PLURAL, ns, name)
            if fresh is None:
                raise oauth.not_found(f"checkout {ns}/{name} is gone")
            obj, meta = fresh, fresh["metadata"]
        else:
            raise oauth.temporarily_unavailable(f"checkout {ns}/{name} kept changing; retry")
        status, spec = obj.get("status") or {}, obj["spec"]
        log.info("credential of workload checkout %s/%s handed out to %s", ns, name, spec["requester"])
        return {
            "checkout": name,
            "namespace": ns,
            "project": spec["project"],
            "account": spec["account"],
            "phase": Phase.ACTIVE.value,
            "expiresAt": status.get("expiresAt"),
            "credential": {k: v.decode("utf-8", "replace") for k, v in sorted(stored.data.items())},
        }

    # ----- /v1/checkouts/<namespace>/<name> -------------------------------------------------------
    async def _mine(self, claims: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
        who = requester(claims)
        missing = oauth.not_found(f"no checkout {clip(namespace)}/{clip(name)} of this workload")
        if not (_NAME.match(namespace) and len(namespace) <= 63 and _NAME.match(name)):
            raise missing
        obj = await self._objects.get(PLURAL, namespace, name)
        if obj is None or (obj.get("spec") or {}).get("requester") != who:
            raise missing
        return obj

    async def status(self, claims: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
        """Where the caller's checkout is (never its credential)."""
        return self.describe(await self._mine(claims, namespace, name))

    @staticmethod
    def describe(obj: Mapping[str, Any]) -> dict[str, Any]:
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        return {
            "checkout": meta["name"],
            "namespace": meta["namespace"],
            "project": spec.get("project"),
            "account": spec.get("account"),
            "phase": status.get("phase") or Phase.PENDING.value,
            "message": status.get("message") or "",
            "expiresAt": status.get("expiresAt"),
            "credentialDelivered": DELIVERED in (meta.get("annotations") or {}),
        }

    async def credential(self, claims: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
        """The credential of the caller's checkout that was not yet Active when it was created (approvers
        were asked), once: waits (bounded) as the checkout request does."""
        await self._mine(claims, namespace, name)
        return await self._settle_and_deliver(namespace, name)

    async def checkin(self, claims: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
        """Ask the operator to check the caller's checkout in (it rotates as the CheckoutPolicy says)."""
        obj = await self._mine(claims, namespace, name)
        phase = (obj.get("status") or {}).get("phase") or Phase.PENDING.value
        if phase not in FINAL_PHASES and not (obj["spec"].get("checkin") or {}).get("requested"):
            try:
                await self._objects.patch(PLURAL, namespace, name, {"spec": {"checkin": {"requested": True}}})
            except KubeError as exc:
                if exc.not_found:
                    raise oauth.not_found(f"no checkout {namespace}/{name} of this workload") from None
                raise
            log.info(
                "check-in of workload checkout %s/%s requested by %s", namespace, name, requester(claims)
            )
        return {**self.describe(obj), "checkinRequested": phase not in FINAL_PHASES}
