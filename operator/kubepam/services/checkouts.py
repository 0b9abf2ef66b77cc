"""Checkouts of shared accounts: exclusive hold (a Lease decided by the API server), the credential in
a Secret only the holder can read, check-in with rotation, elevation with approval, and every
deadline in the one scheduler.

Every step first writes its intent to the Checkout's status (e.g. CheckinInProgress with
rotation.required), then acts idempotently, then records the result; a crash or a failing backend
resumes from the status. Failures are retried with backoff until they succeed; the account stays
held (locked) until its rotation is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from kubepam.adapters import audit, metrics, postgres
from kubepam.adapters.events import Events
from kubepam.adapters.kube import Secrets, owner_reference
from kubepam.adapters.leases import Hold, Leases, LeaseState, Waiting
from kubepam.adapters.rbac import Rbac
from kubepam.domain.approvals import (
    State,
    Target,
    break_glass_problem,
    capped,
    elevation_rule,
    request_id,
    tally,
    votes_of,
)
from kubepam.domain.checkout import (
    FINAL,
    FINAL_PHASES,
    HOLDS_PRIVILEGE,
    ApprovalRule,
    CheckinReason,
    CheckoutPolicySpec,
    Elevation,
    Phase,
    checkin_trigger,
    checkout_duration,
    denial_message,
    elevation_on_grant,
)
from kubepam.domain.conditions import Health, rfc3339
from kubepam.domain.durations import format_duration, parse_duration
from kubepam.domain.grants import privileged_namespaces_problem
from kubepam.domain.kinds import API_VERSION
from kubepam.domain.ownership import derived_name
from kubepam.domain.plans import Plan
from kubepam.domain.policy import Capability, Decision, Policy, Request, Subject, evaluate
from kubepam.domain.project import ProjectSpec
from kubepam.domain.queue import DEFAULT_CLAIM_WINDOW, Offer, estimate, offer_outcome
from kubepam.domain.text import clip
from kubepam.services.accounts import Account, Accounts, find_account
from kubepam.services.projects import put
from kubepam.services.reconciler import RETRYABLE, ObjectReconciler, Objects
from kubepam.services.scheduler import Scheduler

log = logging.getLogger("kubepam.checkouts")
PLURAL = "checkouts"
WORKLOAD_PREFIX = "workload:"


class CheckoutDirectory(Protocol):
    def policies(self, namespace: str) -> Sequence[Policy]: ...
    def project(self, namespace: str, name: str) -> ProjectSpec | None: ...
    def project_uid(self, namespace: str, name: str) -> str | None: ...
    def checkout_policy(self, namespace: str, project: str) -> CheckoutPolicySpec | None: ...


def _ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def health(phase: Phase, message: str) -> Plan:
    if phase is Phase.DENIED:
        return Plan(Health.STALLED, "Denied", message)
    if phase in (Phase.PENDING, Phase.CHECKIN, Phase.QUEUED, Phase.OFFERED):
        return Plan(Health.RECONCILING, phase.value, message)
    return Plan(Health.READY, phase.value, message)


def checkout_subject(spec: Mapping[str, Any]) -> Subject:
    """Who the AccessPolicies judge: a person with the groups the API server stamped, or, for a checkout
    the broker created for a CI job (requester ``workload:<ns>/<connection>:<sub>``, which only the
    operator may write: see the admission policies), the WorkloadRole named in ``spec.workloadRole``."""
    requester = str(spec["requester"])
    role = spec.get("workloadRole")
    if requester.startswith(WORKLOAD_PREFIX) and role:
        return Subject(requester, frozenset(), role=str(role))
    return Subject(requester, frozenset(spec.get("groups") or []))


def pending_deadline(status: Mapping[str, Any]) -> datetime | None:
    """When the open approval request expires (pendingTTL), if one is open."""
    request = status.get("approvalRequest") or {}
    return _ts(request.get("expiresAt")) if request.get("state") == State.PENDING.value else None


def credential_secret_name(name: str, uid: str) -> str:
    """The holder's credential Secret (and its Role and RoleBinding): named from the Checkout's uid."""
    return derived_name("checkout", name, uid)


def elevation_binding_name(name: str, uid: str) -> str:
    return derived_name("elevation", name, uid)


class CheckoutService(ObjectReconciler):
    plural = PLURAL

    def __init__(
        self,
        directory: CheckoutDirectory,
        objects: Objects,
        leases: Leases,
        secrets: Secrets,
        rbac: Rbac,
        accounts: Accounts,
        scheduler: Scheduler,
        events: Events,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(objects, scheduler, events, clock)
        self._dir = directory
        self._leases = leases
        self._secrets = secrets
        self._rbac = rbac
        self._accounts = accounts

    def _health(self, status: Mapping[str, Any]) -> Plan:
        return health(Phase(status.get("phase") or "Pending"), str(status.get("message") or ""))

    def due(self, obj: Mapping[str, Any]) -> datetime | None:
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase == Phase.CHECKIN.value:  # a check-in under way: finish it first
            return self._clock()
        pending = pending_deadline(status)
        if phase in (None, Phase.PENDING.value):
            return pending
        if phase == Phase.OFFERED.value:  # the claim window's end (a queued checkout has no deadline)
            return _ts((status.get("offer") or {}).get("expiresAt"))
        if phase != Phase.ACTIVE.value:
            return None
        elevation = status.get("elevation") or {}
        deadlines = [d for d in (_ts(status.get("expiresAt")), _ts(elevation.get("expiresAt")), pending) if d]
        return min(deadlines) if deadlines else None

    # ----- the state machine --------------------------------------------------------------------
    async def _step(self, obj: dict[str, Any]) -> None:
        for _ in range(8):  # each pass moves one phase; stop when nothing changes
            status = obj.get("status") or {}
            phase = Phase(status.get("phase") or Phase.PENDING.value)
            if phase in FINAL:
                return
            handler = {
                Phase.PENDING: self._start,
                Phase.QUEUED: self._queued,
                Phase.OFFERED: self._offered,
                Phase.ACTIVE: self._active,
                Phase.CHECKIN: self._checkin,
            }[phase]
            changes = await handler(obj)
            if not changes:
                return
            obj = await self._write(obj, changes)
            await self._flush(obj)

    def _context(self, obj: Mapping[str, Any]) -> tuple[Account | None, CheckoutPolicySpec | None, str]:
        spec, ns = obj["spec"], obj["metadata"]["namespace"]
        project = self._dir.project(ns, spec["project"])
        if project is None:
            return None, None, f"no Project {ns}/{spec['project']}"
        account = find_account(ns, spec["project"], project.uid, project.shared_accounts, spec["account"])
        if account is None:
            return None, None, f"project {spec['project']} has no shared account {spec['account']}"
        policy = self._dir.checkout_policy(ns, spec["project"])
        if policy is None or not policy.covers(account.name):
            return (
                account,
                None,
                f"no CheckoutPolicy of project {spec['project']} covers account {account.name}",
            )
        return account, policy, ""

    def _owner(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return owner_reference(API_VERSION, "Checkout", meta["name"], meta["uid"])

    async def _start(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta, spec = obj["metadata"], obj["spec"]
        ns, now = meta["namespace"], self._clock()
        account, policy, problem = self._context(obj)
        if account is None or policy is None:
            # applied together with its Project or CheckoutPolicy: wait for them (a workload's checkout comes
            # from the broker, never in a batch: its job is answered now)
            if self._settling(obj) and not str(spec["requester"]).startswith(WORKLOAD_PREFIX):
                return await self._wait_for_reference(obj, problem)
            return await self._deny(obj, problem)
        subject = checkout_subject(spec)
        decision = evaluate(
            self._dir.policies(ns),
            subject,
            Request(ns, spec["project"], Capability.CHECKOUT, account=account.name),
        )
        if not decision.allowed:
            return await self._deny(obj, decision.reason)
        try:
            requested = parse_duration(spec["duration"]) if spec.get("duration") else None
        except ValueError as exc:  # the CRD bounds it; an object stored before that is refused, not retried
            return await self._deny(obj, f"spec.duration: {exc}")
        duration = checkout_duration(requested, policy.max_duration, decision.checkout_duration)
        gate = await self._approval_gate(obj, account, policy, duration, now)
        if gate is not None:  # waiting for approvers, or refused by them
            return gate
        if (obj.get("status") or {}).get("approvedDuration"):  # approvers granted this length (capped)
            duration = min(duration, parse_duration(obj["status"]["approvedDuration"]))
            # the window starts at the final approval (decidedAt), not at this later pass that takes the
            # account: the moments between the two come off the window
            decided = _ts(((obj.get("status") or {}).get("approvalRequest") or {}).get("decidedAt"))
            if decided is not None and timedelta(0) < now - decided < duration:
                duration -= now - decided
        return await self._acquire(obj, account, policy, decision, duration, now)

    async def _approval_gate(
        self,
        obj: dict[str, Any],
        account: Account,
        policy: CheckoutPolicySpec,
        duration: timedelta,
        now: datetime,
    ) -> dict[str, Any] | None:
        """None when the checkout may take the account now; else the status while approvers decide."""
        rule = policy.checkout_approval
        if rule is None:
            return None
        request = (obj.get("status") or {}).get("approvalRequest") or {}
        meta = obj["metadata"]
        if request.get("target") != Target.CHECKOUT.value:
            opened = self._open_request(obj, Target.CHECKOUT, rule, now, duration=format_duration(duration))
            self.wake(meta["namespace"], meta["name"], rule.pending_ttl + now)
            return {"phase": Phase.PENDING.value, "approvalRequest": opened, "message": opened["message"]}
        if (deadline := pending_deadline(obj.get("status") or {})) is not None:
            self.wake(meta["namespace"], meta["name"], deadline)
        outcome = self._decide(obj, rule, request, policy, now, duration)
        if outcome is None:  # nothing new
            return None if request.get("state") == State.APPROVED.value else {}
        state = State(outcome["approvalRequest"]["state"])
        if state is State.APPROVED:
            outcome["approvedDuration"] = format_duration(
                capped(duration, policy.break_glass, bool(outcome["approvalRequest"].get("breakGlass")))
            )
            return outcome  # written, then the next pass takes the account (the window starts now)
        if state in (State.DENIED, State.EXPIRED):
            denied = await self._deny(obj, f"checkout {outcome['approvalRequest']['message']}")
            return {**outcome, **denied}
        return {**outcome, "message": outcome["approvalRequest"]["message"]}

    def _open_request(
        self, obj: Mapping[str, Any], target: Target, rule: ApprovalRule, now: datetime, **extra: Any
    ) -> dict[str, Any]:
        """A new approval request (its id is what votes name); the API server accepts votes on it alone."""
        previous = (obj.get("status") or {}).get("approvalRequest") or {}
        round_ = int(previous.get("round") or 0) + 1
        opened = {
            "id": request_id(target, round_),
            "target": target.value,
            "round": round_,
            "state": State.PENDING.value,
            "requestedAt": rfc3339(now),
            "expiresAt": rfc3339(now + rule.pending_ttl),
            "decidedAt": None,
            "breakGlass": False,
            "deniedBy": [],
            "duration": None,
            **extra,
        }
        counted = tally(rule, [], request=opened["id"], requester="", requested_at=now, now=now)
        opened.update(stages=counted.status()["stages"], message=f"{target.value.lower()} {counted.message}")
        self._note(
            obj,
            "ApprovalRequested",
            f"{target.value.lower()} needs approval ({opened['id']}): {counted.message}",
            audit={
                "action": "elevation.requested" if target is Target.ELEVATION else "approval.requested",
                "outcome": "pending",
                "actor": obj["spec"]["requester"],
                "request": opened["id"],
                "account": obj["spec"]["account"],
                "approvalTarget": target.value,
            },
        )
        return opened

    def _decide(
        self,
        obj: Mapping[str, Any],
        rule: ApprovalRule,
        request: Mapping[str, Any],
        policy: CheckoutPolicySpec,
        now: datetime,
        window: timedelta,
    ) -> dict[str, Any] | None:
        """Count the votes (or a break-glass) on the open request: the status changes, or None if none.
        ``window`` is what an approval grants (a break-glass caps it)."""
        if request.get("state") != State.PENDING.value:
            return None
        spec, status = obj["spec"], obj.get("status") or {}
        requested_at = _ts(request.get("requestedAt")) or now
        counted = tally(
            rule,
            votes_of(status.get("approvals")),
            request=str(request.get("id")),
            requester=spec["requester"],
            requested_at=requested_at,
            now=now,
        )
        target = str(request.get("target", "")).lower()
        updated: dict[str, Any] = {**request, **counted.status(), "message": f"{target} {counted.message}"}
        changes: dict[str, Any] = {}
        glass = spec.get("breakGlass") or {}
        if counted.state is State.PENDING and glass and request.get("target") != Target.EXTENSION.value:
            problem = break_glass_problem(policy.break_glass, glass.get("reason"), policy.project)
            if problem:
                updated["message"] = f"{target} {counted.message}; {problem}"
            else:
                updated.update(state=State.APPROVED.value, breakGlass=True)
                updated["message"] = f"{target} approved by its requester with break-glass"
                window = capped(window, policy.break_glass, True)
                changes["breakGlass"] = {
                    "used": True,
                    "at": rfc3339(now),
                    "target": request.get("target"),
                    "window": format_duration(window),
                }
                self._note(
                    obj,
                    "BreakGlass",
                    f"{spec['requester']} approved their own {target} of {spec['account']} with break-glass "
                    f"(window capped at {format_duration(window)}): {clip(str(glass.get('reason')))}",
                    warning=True,
                    audit={
                        "actor": spec["requester"],
                        "account": spec["account"],
                        "breakGlass": True,
                        "request": request.get("id"),
                        "reason": glass.get("reason"),
                    },
                )
        if updated.get("state") != State.PENDING.value:
            updated["decidedAt"] = rfc3339(now)
            if not updated.get("breakGlass"):
                self._note(
                    obj,
                    f"{target.title()}{updated['state']}",
                    updated["message"],
                    warning=updated["state"] != State.APPROVED.value,
                    audit={
                        "actor": ", ".join(counted.denied_by)
                        or ", ".join(n for s in counted.stages for n in s.approved_by),
                        "account": spec["account"],
                        "requester": spec["requester"],
                        "request": request.get("id"),
                        "decision": updated["state"],
                    },
                )
        if updated == dict(request) and not changes:
            return None
        return {"approvalRequest": updated, **changes}

    async def _acquire(
        self,
        obj: dict[str, Any],
        account: Account,
        policy: CheckoutPolicySpec,
        decision: Decision,
        duration: timedelta,
        now: datetime,
    ) -> dict[str, Any]:
        """Take the account's Lease (decided by the API server) and activate; or, when it is held and
        spec.queue asks for it, join its waiting line (on the same Lease) and wait Queued; or refuse."""
        meta, spec = obj["metadata"], obj["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        want = Hold(uid, meta["name"], spec["requester"], now + duration)
        waiting = Waiting(uid, meta["name"], spec["requester"], now) if spec.get("queue") else None
        state = await self._leases.take(ns, account.lease_name, want, waiting)
        if (
            state.hold is not None
            and state.hold.uid != uid
            and await self._reclaim_if_orphaned(ns, account, policy, state.hold)
        ):
            state = await self._leases.take(ns, account.lease_name, want, waiting)
        if state.hold is None and state.line:  # free with people waiting (after a crash): the head first
            state = await self._pass_on(ns, account, policy.claim_window, None)
        if state.hold is not None and state.hold.uid == uid:
            if state.hold.offered:  # handed to us from the line between two reads
                return self._offer(obj, account, state.hold, now)
            expires = state.hold.expires_at or want.expires_at
            assert expires is not None
            return await self._activate(obj, account, policy, decision, expires, now)
        if state.position(uid) is not None:
            queued = self._queue_status(obj, account, policy, state, now)
            self._note(
                obj,
                "Queued",
                f"{spec['requester']} waits in line for {account.name}: {queued['message']}",
                audit={"actor": spec["requester"], "account": account.name, "position": state.position(uid)},
            )
            return queued
        if state.hold is None:
            ahead = len(state.line)
            return await self._deny(
                obj, f"account {account.name} goes to the {ahead} checkout(s) waiting in its line first"
            )
        return await self._deny(obj, await self._denial(ns, account, state.hold, now))

    async def _activate(
        self,
        obj: dict[str, Any],
        account: Account,
        policy: CheckoutPolicySpec,
        decision: Decision,
        expires: datetime,
        now: datetime,
    ) -> dict[str, Any]:
        """The account is ours: deliver the credential to the holder alone and start the elevation."""
        meta, spec = obj["metadata"], obj["spec"]
        ns = meta["namespace"]
        credential = await self._accounts.credential(account)
        secret = credential_secret_name(meta["name"], meta["uid"])
        owner = self._owner(obj)
        await put(self._secrets, ns, secret, credential, owner)
        if not str(spec["requester"]).startswith(WORKLOAD_PREFIX):  # a workload has no Kubernetes user:
            # the broker hands it the credential once (services/workload_checkouts.py)
            await self._rbac.grant_secret_read(ns, secret, secret, spec["requester"], owner)
        rule = decision.grant
        wants_elevation = bool((spec.get("elevation") or {}).get("requested"))
        elevation = elevation_on_grant(
            policy, account.name, wants_elevation, rule.elevation_requires_approval if rule else True
        )
        note = ""
        if (
            elevation in (Elevation.PENDING, Elevation.APPROVED)
            and rule is not None
            and not rule.elevation_allowed
        ):
            elevation, note = Elevation.DENIED, f"rule {decision.source} does not allow elevation"
        elif elevation in (Elevation.PENDING, Elevation.APPROVED) and (
            problem := self._elevation_targets_problem(account, policy)
        ):
            elevation, note = Elevation.DENIED, problem
        self._note(
            obj,
            "CheckedOut",
            f"{account.name} checked out by {spec['requester']} until {rfc3339(expires)}",
            audit={
                "actor": spec["requester"],
                "account": account.name,
                "reason": spec.get("reason"),
                "until": rfc3339(expires),
            },
        )
        return {
            "phase": Phase.ACTIVE.value,
            "holder": spec["requester"],
            "grantedAt": rfc3339(now),
            "expiresAt": rfc3339(expires),
            "secretName": secret,
            "message": f"checked out until {rfc3339(expires)} under {decision.source}",
            "elevation": {"state": elevation.value, "lastError": note},
        }

    async def _deny(self, obj: dict[str, Any], reason: str) -> dict[str, Any]:
        self._note(
            obj,
            "Denied",
            reason,
            warning=True,
            audit={
                "actor": obj["spec"].get("requester"),
                "account": obj["spec"].get("account"),
                "reason": reason,
            },
        )
        return {"phase": Phase.DENIED.value, "message": reason}

    async def _denial(self, ns: str, account: Account, holder: Hold, now: datetime) -> str:
        """The refusal for a held account; names a rotation the holder's check-in still waits for."""
        other = await self._objects.get(PLURAL, ns, holder.checkout) if holder.checkout else None
        rotation = ((other or {}).get("status") or {}).get("rotation") or {}
        rotating = bool(rotation.get("required") and not rotation.get("completedAt"))
        return denial_message(account.name, holder.holder, holder.expires_at, now, rotating=rotating)

    async def _reclaim_if_orphaned(
        self, ns: str, account: Account, policy: CheckoutPolicySpec, holder: Hold
    ) -> bool:
        """A Lease whose Checkout was deleted while the operator was away (or has ended): clean up as a
        forced check-in, and hand the account to the next in its line."""
        if await self._alive(ns, holder.uid, holder.checkout):
            return False
        if not holder.offered:  # an offer never handed out the credential: nothing to take back
            await self._revoke_account(account, policy, holder.holder, holder.checkout, holder.uid)
            if policy.rotate_on_forced:
                await self._accounts.rotate(account)
        await self._pass_on(ns, account, policy.claim_window, holder.uid)
        log.info("reclaimed %s/%s from deleted checkout %s", ns, account.name, holder.checkout)
        return True

    # ----- the waiting line (domain/queue.py): it lives on the account's Lease ----------------------
    async def _alive(self, ns: str, uid: str, name: str) -> bool:
        """Does the Checkout ``name`` with this uid still exist and still want or hold its account?"""
        other = await self._objects.get(PLURAL, ns, name) if name else None
        if other is None or other["metadata"].get("uid") != uid or other["metadata"].get("deletionTimestamp"):
            return False
        return str((other.get("status") or {}).get("phase") or Phase.PENDING.value) not in FINAL_PHASES

    def _renumber(self, ns: str, state: LeaseState) -> None:
        """Everyone still in line writes their new position (each under its own lock, from the Lease)."""
        for waiting in state.line:
            self.enqueue(ns, waiting.checkout)

    async def _pass_on(self, ns: str, account: Account, window: timedelta, uid: str | None) -> LeaseState:
        """The holder ``uid`` (None: nobody, the account was freed before a crash) lets go and the head of
        the line gets an offer for ``window``, in one guarded write of the Lease (or the account is free).
        A head whose checkout is gone is passed over; entries of checkouts that are gone leave the line.
        The offered checkout is enqueued (it turns Offered, and Active if it claims) and so is everyone
        still waiting (their positions)."""
        lease = account.lease_name
        state = await self._leases.handover(ns, lease, uid, self._clock() + window)
        for _ in range(len(state.line) + 1):
            hold = state.hold
            if hold is None or not hold.offered or await self._alive(ns, hold.uid, hold.checkout):
                break
            log.info("%s/%s: passing over checkout %s, which is gone", ns, account.name, hold.checkout)
            state = await self._leases.handover(ns, lease, hold.uid, self._clock() + window)
        for waiting in state.line:
            if not await self._alive(ns, waiting.uid, waiting.checkout):
                state = await self._leases.leave(ns, lease, waiting.uid)
        if state.hold is not None and state.hold.offered:
            self.enqueue(ns, state.hold.checkout)
        self._renumber(ns, state)
        return state

    def _queue_status(
        self,
        obj: Mapping[str, Any],
        account: Account,
        policy: CheckoutPolicySpec,
        state: LeaseState,
        now: datetime,
    ) -> dict[str, Any]:
        uid = obj["metadata"]["uid"]
        place = state.position(uid)
        assert place is not None
        until = estimate(state.hold, place, policy.max_duration, policy.claim_window, now)
        holder = f"held by {state.hold.holder}" if state.hold is not None else "free"
        return {
            "phase": Phase.QUEUED.value,
            "queue": {
                "position": place,
                "estimatedAt": rfc3339(until),
                "joinedAt": rfc3339(state.line[place - 1].joined_at),
            },
            "message": f"#{place} in line for {account.name} ({holder}); estimated by {rfc3339(until)}",
        }

    def _offer(self, obj: Mapping[str, Any], account: Account, hold: Hold, now: datetime) -> dict[str, Any]:
        """First in line: the account is held for this checkout until the offer's deadline."""
        meta, spec = obj["metadata"], obj["spec"]
        deadline = rfc3339(hold.expires_at or now)
        self.wake(meta["namespace"], meta["name"], _ts(deadline) or now)
        self._note(
            obj,
            "Offered",
            f"{account.name} is offered to {spec['requester']} until {deadline}",
            audit={"actor": spec["requester"], "account": account.name, "until": deadline},
        )
        claim = "claiming it" if spec.get("claim") else f"claim it (kubepam claim {meta['name']})"
        return {
            "phase": Phase.OFFERED.value,
            "queue": None,
            "offer": {"expiresAt": deadline},
            "message": f"{account.name} is yours: {claim} before {deadline}",
        }

    async def _cancel(
        self, obj: Mapping[str, Any], account: Account, window: timedelta, why: str
    ) -> dict[str, Any]:
        """Leave the line, or pass an offer on (the check-in of a checkout that never held the credential)."""
        meta, spec = obj["metadata"], obj["spec"]
        ns, uid = meta["namespace"], meta["uid"]
        state = await self._leases.leave(ns, account.lease_name, uid)
        if state.hold is not None and state.hold.uid == uid:  # offered meanwhile: the next one's turn
            await self._pass_on(ns, account, window, uid)
        else:
            self._renumber(ns, state)
        self._note(
            obj,
            Phase.CANCELLED.value,
            f"{spec['requester']} {why} for {account.name}",
            audit={"actor": spec["requester"], "account": account.name, "why": why},
        )
        self.forget(ns, meta["name"])
        return {"phase": Phase.CANCELLED.value, "queue": None, "message": why}

    async def _queued(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Waiting in line: take an offer made to us, leave if asked, else keep the position current."""
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        ns, uid, now = meta["namespace"], meta["uid"], self._clock()
        account, policy, problem = self._context(obj)
        if account is None or policy is None:
            if account is not None:
                await self._cancel(obj, account, DEFAULT_CLAIM_WINDOW, "left the line")
            return {**await self._deny(obj, problem), "queue": None}
        state = await self._leases.state(ns, account.lease_name)
        if (
            state.hold is not None
            and state.hold.uid != uid
            and await self._reclaim_if_orphaned(ns, account, policy, state.hold)
        ):
            state = await self._leases.state(ns, account.lease_name)
        if state.hold is None and state.line:  # free with people waiting (after a crash): the head first
            state = await self._pass_on(ns, account, policy.claim_window, None)
        if state.hold is not None and state.hold.uid == uid:
            return self._offer(obj, account, state.hold, now)  # a check-in asked meanwhile passes it on
        checkin = spec.get("checkin") or {}
        if checkin.get("requested") or checkin.get("force"):
            return await self._cancel(obj, account, policy.claim_window, "left the line")
        if state.position(uid) is None:  # the Lease was removed or rewritten by hand: start over
            lost = "lost its place in line: asking again"
            return {"phase": Phase.PENDING.value, "queue": None, "message": lost}
        changes = self._queue_status(obj, account, policy, state, now)
        return {} if all(status.get(k) == v for k, v in changes.items()) else changes

    async def _offered(self, obj: dict[str, Any]) -> dict[str, Any]:
        """First in line: claimed -> Active (the checkout's time starts now); the claim window over ->
        Expired and the next one's turn (no rotation: the credential was never handed out)."""
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        ns, uid, now = meta["namespace"], meta["uid"], self._clock()
        account, policy, problem = self._context(obj)
        if account is None or policy is None:
            if account is not None:
                await self._cancel(obj, account, DEFAULT_CLAIM_WINDOW, "declined the offer")
            return await self._deny(obj, problem)
        checkin = spec.get("checkin") or {}
        if checkin.get("requested") or checkin.get("force"):
            return await self._cancel(obj, account, policy.claim_window, "declined the offer")
        state = await self._leases.state(ns, account.lease_name)
        mine = state.hold is not None and state.hold.uid == uid
        deadline = _ts((status.get("offer") or {}).get("expiresAt")) or (
            state.hold.expires_at if state.hold is not None and mine else None
        )
        unclaimed = f"offer not claimed within {format_duration(policy.claim_window)}"
        if not mine:  # passed on already (a crash after the hand-over), or the Lease was rewritten by hand
            if offer_outcome(False, deadline, now) is Offer.EXPIRE:
                self.forget(ns, meta["name"])
                return {"phase": Phase.EXPIRED.value, "message": unclaimed}
            return {"phase": Phase.PENDING.value, "offer": None, "message": "the offer is gone: asking again"}
        outcome = offer_outcome(bool(spec.get("claim")), deadline, now)
        if outcome is Offer.WAIT:
            assert deadline is not None
            self.wake(ns, meta["name"], deadline)
            return {}
        if outcome is Offer.EXPIRE:
            await self._pass_on(ns, account, policy.claim_window, uid)
            self._note(
                obj,
                "OfferExpired",
                f"{spec['requester']} did not claim {account.name}: {unclaimed}; it goes to the next in line",
                audit={"actor": spec["requester"], "account": account.name, "why": unclaimed},
            )
            self.forget(ns, meta["name"])
            return {"phase": Phase.EXPIRED.value, "message": unclaimed}
        terms = self._claim_terms(obj, account, policy)
        if isinstance(terms, str):  # no longer allowed: the next one's turn
            await self._pass_on(ns, account, policy.claim_window, uid)
            return await self._deny(obj, terms)
        decision, duration = terms
        expires = now + duration
        claimed = Hold(uid, meta["name"], spec["requester"], expires)
        await self._leases.update_expiry(ns, account.lease_name, claimed)
        self._renumber(ns, state)  # the estimates behind move with the claim
        return await self._activate(obj, account, policy, decision, expires, now)

    def _claim_terms(
        self, obj: Mapping[str, Any], account: Account, policy: CheckoutPolicySpec
    ) -> tuple[Decision, timedelta] | str:
        """The rule and the length of a claimed checkout, judged at the claim; or why it is refused now."""
        spec, ns = obj["spec"], obj["metadata"]["namespace"]
        decision = evaluate(
            self._dir.policies(ns),
            checkout_subject(spec),
            Request(ns, spec["project"], Capability.CHECKOUT, account=account.name),
        )
        if not decision.allowed:
            return decision.reason
        try:
            requested = parse_duration(spec["duration"]) if spec.get("duration") else None
        except ValueError as exc:
            return f"spec.duration: {exc}"
        duration = checkout_duration(requested, policy.max_duration, decision.checkout_duration)
        if approved := (obj.get("status") or {}).get("approvedDuration"):  # approvers granted this (capped)
            duration = min(duration, parse_duration(approved))
        return decision, duration

    async def _active(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        now = self._clock()
        checkin = spec.get("checkin") or {}
        expires = _ts(status.get("expiresAt"))
        reason = checkin_trigger(
            force=bool(checkin.get("force")),
            requested=bool(checkin.get("requested")),
            expires_at=expires,
            now=now,
        )
        account, policy, _ = self._context(obj)
        if reason is not None:
            rotate = policy.rotates(reason) if policy else True
            return {
                "phase": Phase.CHECKIN.value,
                "checkinReason": reason.value,
                "rotation": {"required": rotate, "attempts": 0, "lastError": ""},
                "message": f"checking in ({reason.value.lower()})"
                + ("; rotating the password" if rotate else ""),
            }
        elevation = dict(status.get("elevation") or {})
        state = Elevation(elevation.get("state") or Elevation.NOT_REQUIRED.value)
        changes: dict[str, Any] = {}
        if policy is not None and account is not None:
            changes = await self._elevation(obj, account, policy, state, elevation, now)
            if not changes:
                changes = await self._extend(obj, account, policy, expires, now)
        deadlines = [
            d
            for d in (
                expires,
                _ts((changes.get("elevation") or elevation).get("expiresAt")),
                pending_deadline({**status, **changes}),
            )
            if d
        ]
        if deadlines:
            self.wake(meta["namespace"], meta["name"], min(deadlines))
        return changes

    async def _extend(
        self,
        obj: dict[str, Any],
        account: Account,
        policy: CheckoutPolicySpec,
        expires: datetime | None,
        now: datetime,
    ) -> dict[str, Any]:
        spec, status = obj["spec"], obj.get("status") or {}
        granted = _ts(status.get("grantedAt"))
        if not spec.get("duration") or granted is None or expires is None:
            return {}
        subject = checkout_subject(spec)
        decision = evaluate(
            self._dir.policies(obj["metadata"]["namespace"]),
            subject,
            Request(obj["metadata"]["namespace"], spec["project"], Capability.CHECKOUT, account=account.name),
        )
        try:
            requested = parse_duration(spec["duration"])
        except ValueError as exc:
            message = f"spec.duration: {exc}; the checkout keeps its expiry"
            return {} if status.get("message") == message else {"message": message}
        length = checkout_duration(
            requested,
            policy.max_duration,
            decision.checkout_duration if decision.allowed else None,
        )
        changes: dict[str, Any] = {}
        if policy.checkout_approval is not None and status.get("approvedDuration"):
            approved = parse_duration(status["approvedDuration"])
            if length > approved:  # more than approvers granted: ask them again
                asked = format_duration(length)
                request = status.get("approvalRequest") or {}
                if request.get("duration") == asked and request.get("target") != Target.EXTENSION.value:
                    return {}  # what was asked at checkout, cut by a break-glass cap: ask for more to extend
                if request.get("target") != Target.EXTENSION.value or request.get("duration") != asked:
                    if request.get("state") == State.PENDING.value:
                        return {}  # one request at a time: the open one is decided first
                    opened = self._open_request(
                        obj, Target.EXTENSION, policy.checkout_approval, now, duration=asked
                    )
                    return {"approvalRequest": opened, "message": opened["message"]}
                outcome = self._decide(obj, policy.checkout_approval, request, policy, now, length)
                if outcome is None:
                    return {}
                state = State(outcome["approvalRequest"]["state"])
                if state is not State.APPROVED:
                    note = outcome["approvalRequest"]["message"]
                    if state is not State.PENDING:
                        note += "; the checkout keeps its expiry"
                    return {**outcome, "message": note}
                glass = bool(outcome["approvalRequest"].get("breakGlass"))
                approved = capped(length, policy.break_glass, glass)
                changes = {**outcome, "approvedDuration": format_duration(approved)}
            length = min(length, approved)
        wanted = granted + length
        if wanted <= expires:
            return changes
        await self._leases.update_expiry(
            obj["metadata"]["namespace"],
            account.lease_name,
            Hold(obj["metadata"]["uid"], obj["metadata"]["name"], spec["requester"], wanted),
        )
        return {**changes, "expiresAt": rfc3339(wanted), "message": f"extended until {rfc3339(wanted)}"}

    async def _elevation(
        self,
        obj: dict[str, Any],
        account: Account,
        policy: CheckoutPolicySpec,
        state: Elevation,
        elevation: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        spec, status = obj["spec"], obj.get("status") or {}
        requested = bool((spec.get("elevation") or {}).get("requested"))
        if state is Elevation.NOT_REQUESTED and requested:
            subject = checkout_subject(spec)
            decision = evaluate(
                self._dir.policies(obj["metadata"]["namespace"]),
                subject,
                Request(
                    obj["metadata"]["namespace"], spec["project"], Capability.CHECKOUT, account=account.name
                ),
            )
            rule = decision.grant
            if rule is None or not rule.elevation_allowed:
                return {
                    "elevation": {
                        **elevation,
                        "state": Elevation.DENIED.value,
                        "lastError": "no rule allows elevation for this checkout",
                    }
                }
            if problem := self._elevation_targets_problem(account, policy):
                return {"elevation": {**elevation, "state": Elevation.DENIED.value, "lastError": problem}}
            nxt = Elevation.PENDING if rule.elevation_requires_approval else Elevation.APPROVED
            return {"elevation": {**elevation, "state": nxt.value}}
        if state is Elevation.PENDING:
            subject = checkout_subject(spec)
            decision = evaluate(
                self._dir.policies(obj["metadata"]["namespace"]),
                subject,
                Request(
                    obj["metadata"]["namespace"], spec["project"], Capability.CHECKOUT, account=account.name
                ),
            )
            grant = decision.grant
            stages = elevation_rule(
                policy,
                grant.approver_users if grant else frozenset(),
                grant.approver_groups if grant else frozenset(),
            )
            request = status.get("approvalRequest") or {}
            if not elevation.get("request") or request.get("id") != elevation.get("request"):
                if request.get("state") == State.PENDING.value:  # an extension is being decided first
                    return {}
                opened = self._open_request(obj, Target.ELEVATION, stages, now)
                return {"approvalRequest": opened, "elevation": {**elevation, "request": opened["id"]}}
            outcome = self._decide(obj, stages, request, policy, now, policy.approval_window)
            if outcome is None:
                return {}
            decided = State(outcome["approvalRequest"]["state"])
            if decided is State.PENDING:
                return outcome
            if decided is State.APPROVED:
                glass = bool(outcome["approvalRequest"].get("breakGlass"))
                window = capped(policy.approval_window, policy.break_glass, glass)
                changes = {
                    "state": Elevation.APPROVED.value,
                    "lastError": "",
                    "expiresAt": rfc3339(now + window),
                }
            else:
                changes = {
                    "state": Elevation.DENIED.value,
                    "lastError": outcome["approvalRequest"]["message"],
                }
            return {**outcome, "elevation": {**elevation, **changes}}
        if state is Elevation.APPROVED:
            expires = _ts(elevation.get("expiresAt")) or now + policy.approval_window
            if now >= expires:
                return {"elevation": {**elevation, "state": Elevation.REMOVED.value}}
            await self._grant(account, policy, spec["requester"], obj)
            self._note(
                obj,
                "Elevated",
                f"{account.name} elevated with {', '.join(policy.privileged_groups)}",
                audit={
                    "actor": spec["requester"],
                    "account": account.name,
                    "groups": list(policy.privileged_groups),
                    "until": rfc3339(expires),
                },
            )
            return {
                "elevation": {
                    **elevation,
                    "state": Elevation.ELEVATED.value,
                    "expiresAt": rfc3339(expires),
                    "lastError": "",
                }
            }
        if state is Elevation.ELEVATED:
            window_end = _ts(elevation.get("expiresAt"))
            if window_end is not None and now >= window_end:
                await self._revoke_account(
                    account, policy, spec["requester"], obj["metadata"]["name"], obj["metadata"]["uid"]
                )
                self._note(
                    obj,
                    "ElevationRemoved",
                    "the approval window ended",
                    audit={"account": account.name, "why": "approval window ended"},
                )
                return {"elevation": {**elevation, "state": Elevation.REMOVED.value, "lastError": ""}}
        return {}

    @staticmethod
    def _elevation_targets_problem(account: Account, policy: CheckoutPolicySpec) -> str:
        if account.backend == "postgresql":
            return ""
        return privileged_namespaces_problem(
            f"CheckoutPolicy of project {account.project}: spec.elevation.namespaces",
            policy.elevation_namespaces,
            account.namespace,
        )

    async def _grant(
        self, account: Account, policy: CheckoutPolicySpec, holder: str, obj: Mapping[str, Any]
    ) -> None:
        if account.backend == "postgresql":
            assert account.postgresql is not None
            await postgres.grant(
                await self._accounts.server(account.namespace, account.postgresql),
                account.name,
                policy.privileged_groups,
            )
        else:
            for target in policy.elevation_namespaces:
                await self._rbac.bind_cluster_roles(
                    target,
                    elevation_binding_name(obj["metadata"]["name"], obj["metadata"]["uid"]),
                    policy.privileged_groups,
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": holder},
                    self._owner(obj),
                    owner_namespace=account.namespace,
                )

    async def _revoke_account(
        self, account: Account, policy: CheckoutPolicySpec, holder: str, checkout: str, uid: str
    ) -> None:
        if account.backend == "postgresql":
            assert account.postgresql is not None
            await postgres.revoke(
                await self._accounts.server(account.namespace, account.postgresql),
                account.name,
                policy.privileged_groups,
            )
        else:
            for target in policy.elevation_namespaces:
                await self._rbac.unbind(
                    target,
                    elevation_binding_name(checkout, uid),
                    policy.privileged_groups,
                    owner_reference(API_VERSION, "Checkout", checkout, uid),
                )

    async def _checkin(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        ns = meta["namespace"]
        account, policy, _ = self._context(obj)
        reason = CheckinReason(status.get("checkinReason") or CheckinReason.EXPIRED.value)
        elevation = dict(status.get("elevation") or {})
        if Elevation(elevation.get("state") or "NOT_REQUIRED") in HOLDS_PRIVILEGE and account and policy:
            await self._revoke_account(account, policy, spec["requester"], meta["name"], meta["uid"])
            self._note(
                obj,
                "ElevationRemoved",
                f"removed at check-in ({reason.value.lower()})",
                audit={"account": account.name, "why": f"check-in {reason.value}"},
            )
            return {"elevation": {**elevation, "state": Elevation.REMOVED.value, "lastError": ""}}
        rotation = dict(status.get("rotation") or {})
        if rotation.get("required") and not rotation.get("completedAt") and account is not None:
            await self._accounts.rotate(account)
            self._note(
                obj,
                "Rotated",
                f"password of {account.name} rotated",
                audit={"account": account.name, "why": f"check-in {reason.value}"},
            )
            return {"rotation": {**rotation, "completedAt": rfc3339(self._clock()), "lastError": ""}}
        secret = credential_secret_name(meta["name"], meta["uid"])  # never a name read back from status
        await asyncio.gather(  # independent: the credential and the right to read it go together
            self._secrets.delete(ns, secret, self._owner(obj)),
            self._rbac.revoke_secret_read(ns, secret, self._owner(obj)),
        )
        if account is not None:  # the same Lease write frees it and offers it to the next in line
            window = policy.claim_window if policy is not None else DEFAULT_CLAIM_WINDOW
            await self._pass_on(ns, account, window, meta["uid"])
        final = Phase.EXPIRED if reason is CheckinReason.EXPIRED else Phase.CHECKED_IN
        if final is Phase.EXPIRED:
            metrics.record_checkout_expired(_ts(status.get("expiresAt")), self._clock())
        self._note(
            obj,
            final.value,
            f"{spec['account']} checked in ({reason.value.lower()})",
            audit={"actor": spec["requester"], "account": spec["account"], "why": reason.value},
        )
        self.forget(ns, meta["name"])
        return {"phase": final.value, "message": f"checked in ({reason.value.lower()})"}

    async def _record_failure(self, obj: dict[str, Any], message: str, attempts: int, delay: float) -> None:
        status = obj.get("status") or {}
        rotation = dict(status.get("rotation") or {})
        changes: dict[str, Any] = {"message": f"retrying in {delay:.0f}s: {message}"}
        phase = Phase(status.get("phase") or "Pending")
        if phase is Phase.CHECKIN:
            changes["rotation"] = {
                **rotation,
                "attempts": max(attempts, int(rotation.get("attempts") or 0) + 1),
                "lastError": message,
            }
            meta, spec = obj["metadata"], obj["spec"]
            audit.record(  # one line per failed attempt; the retry that succeeds writes rotation.succeeded
                audit.Action.ROTATION_FAILED,
                audit.Outcome.FAILURE,
                actor=None,
                target=audit.Target("Checkout", meta.get("namespace"), meta.get("name")),
                reason=message,
                correlation_id=str(meta.get("uid") or ""),
                details={"account": spec.get("account"), "attempt": changes["rotation"]["attempts"]},
            )
        elif phase is Phase.ACTIVE:
            elevation = dict(status.get("elevation") or {})
            changes["elevation"] = {**elevation, "lastError": message, "attempts": attempts}
        await self._write(obj, changes)

    async def abandoned(self, obj: Mapping[str, Any]) -> None:
        """A Checkout deleted while it held its account: clean up as a forced check-in would (an offer
        passes to the next in line). Deleted while waiting in line: leave it."""
        ns = obj["metadata"]["namespace"]
        account, policy, _ = self._context(obj)
        if account is None or policy is None:
            return
        uid = obj["metadata"]["uid"]
        try:
            state = await self._leases.state(ns, account.lease_name)
            if state.hold is not None and state.hold.uid == uid:
                await self._reclaim_if_orphaned(ns, account, policy, state.hold)
            elif state.position(uid) is not None:  # deleted while waiting: leave the line
                self._renumber(ns, await self._leases.leave(ns, account.lease_name, uid))
        except RETRYABLE as exc:
            log.warning(
                "cleanup of deleted checkout %s/%s failed, retried at the next checkout: %s",
                ns,
                obj["metadata"]["name"],
                exc,
            )
