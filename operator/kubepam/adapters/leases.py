"""Exclusive holds on shared accounts with coordination.k8s.io Leases, and their waiting lines.

Acquisition is decided by the API server: creating the Lease, or taking a free one with its
resourceVersion, succeeds for exactly one contender however many replicas and requests race; the
losers read the winner. No in-memory lock is involved. The waiting line lives on the same Lease (an
annotation, see domain/queue.py) and changes the same way, so its order is the order the API server
accepted the appends, and handing the account to the head of the line is a single write.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kubernetes

from kubepam.adapters.kube import KubeError, call, load_config
from kubepam.domain import queue
from kubepam.domain.queue import Hold, LeaseState, Waiting

__all__ = ["Hold", "LeaseState", "Leases", "Waiting"]

HOLDER = "kubepam.io/holder"
CHECKOUT = "kubepam.io/checkout"
EXPIRES = "kubepam.io/expires-at"
OFFERED = "kubepam.io/offered"  # "true" while the holder is an offer from the line, not yet claimed
QUEUE = "kubepam.io/queue"  # the waiting line: a JSON list of {uid, checkout, holder, joinedAt}, in order

CONTENTION_TRIES = 50  # a leader works up to 16 checkouts at once; each round of a race one write wins


def _hold(lease: Any) -> Hold | None:
    if lease is None or not lease.spec or not lease.spec.holder_identity:
        return None
    notes = lease.metadata.annotations or {}
    expires = notes.get(EXPIRES)
    return Hold(
        lease.spec.holder_identity,
        notes.get(CHECKOUT, ""),
        notes.get(HOLDER, ""),
        datetime.fromisoformat(expires) if expires else None,
        offered=notes.get(OFFERED) == "true",
    )


def _state(lease: Any) -> LeaseState:
    if lease is None:
        return LeaseState(None, ())
    return LeaseState(_hold(lease), queue.decode_line((lease.metadata.annotations or {}).get(QUEUE)))


class Leases:
    def __init__(self) -> None:
        load_config()
        self._api = kubernetes.client.CoordinationV1Api()

    async def _read(self, namespace: str, name: str) -> Any:
        try:
            return await call(self._api.read_namespaced_lease, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def _body(
        self,
        namespace: str,
        name: str,
        hold: Hold | None,
        resource_version: str | None,
        owner: dict[str, Any] | None,
        line: tuple[Waiting, ...] = (),
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubepam"},
            "annotations": {},
        }
        if resource_version:
            meta["resourceVersion"] = resource_version
        if owner:
            meta["ownerReferences"] = [owner]
        spec: dict[str, Any] = {"holderIdentity": None}
        if hold is not None:
            meta["annotations"] = {
                HOLDER: hold.holder,
                CHECKOUT: hold.checkout,
                EXPIRES: hold.expires_at.isoformat() if hold.expires_at else "",
            }
            if hold.offered:
                meta["annotations"][OFFERED] = "true"
            spec = {  # MicroTime wants all six digits, even when the microseconds happen to be 0
                "holderIdentity": hold.uid,
                "acquireTime": datetime.now(UTC).isoformat(timespec="microseconds"),
                "renewTime": datetime.now(UTC).isoformat(timespec="microseconds"),
            }
        if line:
            meta["annotations"][QUEUE] = queue.encode_line(line)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    async def holder(self, namespace: str, name: str) -> Hold | None:
        return _hold(await self._read(namespace, name))

    async def state(self, namespace: str, name: str) -> LeaseState:
        """The holder and the waiting line, as one read."""
        return _state(await self._read(namespace, name))

    async def _change(
        self,
        namespace: str,
        name: str,
        change: Callable[[LeaseState], LeaseState],
        owner: dict[str, Any] | None = None,
    ) -> LeaseState:
        """Apply ``change`` to the Lease's current state and write it guarded by the resourceVersion read
        (create if absent); on a conflict somebody else moved first: read again and re-apply. Returns the
        state written (or found, when ``change`` changes nothing)."""
        for attempt in range(CONTENTION_TRIES):
            lease = await self._read(namespace, name)
            before = _state(lease)
            after = change(before)
            if after == before:
                return before
            try:
                if lease is None:
                    await call(
                        self._api.create_namespaced_lease,
                        namespace,
                        self._body(namespace, name, after.hold, None, owner, after.line),
                    )
                else:
                    version = lease.metadata.resource_version
                    await call(
                        self._api.replace_namespaced_lease,
                        name,
                        namespace,
                        self._body(namespace, name, after.hold, version, owner, after.line),
                    )
                return after
            except KubeError as exc:
                if not exc.conflict:
                    raise
            await asyncio.sleep(random.uniform(0, 0.005 * min(attempt + 1, 20)))  # spread the retries
        raise RuntimeError(f"lease {namespace}/{name}: too much contention")

    async def take(
        self,
        namespace: str,
        name: str,
        want: Hold,
        waiting: Waiting | None,
        owner: dict[str, Any] | None = None,
    ) -> LeaseState:
        """Take the account if it is free and nobody waits, else join its line if ``waiting`` is given
        (idempotent). ``want.uid`` holds afterwards, or waits in the returned line, or neither (refused)."""
        return await self._change(namespace, name, lambda s: queue.take(s, want, waiting), owner)

    async def acquire(
        self, namespace: str, name: str, want: Hold, owner: dict[str, Any] | None = None
    ) -> Hold:
        """Returns who holds the account afterwards: ``want`` if this call (or an earlier one) won. A free
        account with people waiting goes to the head of its line first: returned as the one it is for."""
        state = await self.take(namespace, name, want, None, owner)
        if state.hold is None and state.line:
            head = state.line[0]
            return Hold(head.uid, head.checkout, head.holder, None)
        assert state.hold is not None
        return state.hold

    async def leave(self, namespace: str, name: str, uid: str) -> LeaseState:
        """Take ``uid`` out of the line (idempotent); the rest keep their order."""
        return await self._change(namespace, name, lambda s: queue.leave(s, uid))

    async def handover(self, namespace: str, name: str, uid: str | None, offer_until: datetime) -> LeaseState:
        """In one write: ``uid`` lets go and the head of the line holds the account with an offer until
        ``offer_until`` (or it is free). Nobody can take the account in between. A no-op if another holds."""
        return await self._change(namespace, name, lambda s: queue.handover(s, uid, offer_until))

    async def update_expiry(self, namespace: str, name: str, hold: Hold) -> None:
        """A new expiry (or a claimed offer) for the holder ``hold.uid``; nothing if it no longer holds."""

        def renewed(s: LeaseState) -> LeaseState:
            return LeaseState(hold, s.line) if s.hold is not None and s.hold.uid == hold.uid else s

        await self._change(namespace, name, renewed)

    async def release(self, namespace: str, name: str, uid: str) -> None:
        """Free the account if ``uid`` holds it (idempotent). The line stays: ``handover`` passes it on."""

        def released(s: LeaseState) -> LeaseState:
            return LeaseState(None, s.line) if s.hold is not None and s.hold.uid == uid else s

        await self._change(namespace, name, released)
