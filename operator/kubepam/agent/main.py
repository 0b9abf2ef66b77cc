"""The agent's run loop (asyncio): enroll once (key and CSR, docs/agent-protocol.md section 1), then
three tasks until SIGTERM/SIGINT:

- access: the long poll for the desired state; each answer (and each 304, so the grace period runs out
  and drift is repaired) is planned (`kubepam.agent.plan`) against the record of managed accounts and
  carried out (`kubepam.agent.system`); the record is saved before the actions (a crash repeats them)
  and again after;
- logins: the auth log followed (`kubepam.agent.tail`), parsed (`kubepam.agent.logins`), batched (at
  most 100 events or 2 s) and sent; what the broker does not take is spooled (`kubepam.agent.spool`);
- renewal: a new certificate once past renewAfter.

`--once` enrolls if needed, syncs the access once, sends the login lines written since the last run
(and the spool), renews if due, and exits: for cron and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from kubepam import __version__
from kubepam.agent import identity, logins, plan, state, tail
from kubepam.agent.broker import Backoff, BrokerClient, BrokerError
from kubepam.agent.files import write_atomic
from kubepam.agent.settings import AgentSettings
from kubepam.agent.spool import Spool
from kubepam.agent.system import ActionFailed, System

log = logging.getLogger("kubepam.agent")

RECORD_FILE = "accounts.json"
TAIL_FILE = "auth-log-position.json"
DROP_STATUSES = (400, 413, 422)  # a batch the broker will never take: dropped, not spooled forever


class FatalError(Exception):
    pass


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        system: System,
        session: aiohttp.ClientSession,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.system = system
        self.clock = clock
        self.client = BrokerClient(settings.broker, session, clock)
        self.spool = Spool(settings.state_dir / "spool", settings.spool_files)
        self.record_path = settings.state_dir / RECORD_FILE
        self.tail_path = settings.state_dir / TAIL_FILE
        self.key = identity.load_or_create_key(settings.state_dir)
        self.cert: identity.Certificate | None = None
        self.etag: str | None = None
        self.desired: dict[str, Any] | None = None
        self.stop = asyncio.Event()
        self.refusals: set[tuple[str, str]] = set()

    # -- enrollment and renewal ------------------------------------------------------------------

    async def ensure_enrolled(self) -> None:
        self.cert = identity.load_certificate(self.settings.state_dir)
        if self.cert is None:
            self.cert = await self._enroll()
            identity.save_certificate(self.settings.state_dir, self.cert)
            log.info("enrolled; certificate until %s", self.cert.expires_at.isoformat())
        self.client.use(self.key, self.cert.certificate)

    async def _enroll(self) -> identity.Certificate:
        try:
            token = self.settings.token_file.read_text().strip()
        except OSError as exc:
            raise FatalError(f"cannot read the enrollment token {self.settings.token_file}: {exc}") from None
        body = {
            "namespace": self.settings.namespace,
            "project": self.settings.project,
            "token": token,
            "hostname": self.settings.hostname,
            "os": "linux",  # the broker knows linux and windows; the agent manages Linux accounts
            "labels": self.settings.labels,
            "addresses": await asyncio.to_thread(_addresses, self.settings.hostname),
            "csr": identity.csr_pem(self.key, self.settings.hostname),
            "agentVersion": __version__,
        }
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while True:
            try:
                answer = await self.client.enroll(body)
                break
            except BrokerError as exc:
                if exc.status in (400, 401, 403, 404, 409):
                    raise FatalError(f"enrollment refused: {exc}") from None
                if self.settings.once:
                    raise FatalError(f"enrollment failed: {exc}") from None
                delay = backoff.next()
                log.warning("enrollment failed (%s); again in %.0fs", exc, delay)
                if await self._sleep(delay):
                    raise FatalError("stopped before enrolling") from None
        if not isinstance(answer.get("agent"), dict):
            raise FatalError("the broker enrolled the server but issued no agent certificate (no 'agent')")
        try:
            return identity.Certificate.from_answer(answer["agent"])
        except identity.IdentityError as exc:
            raise FatalError(str(exc)) from None

    async def renew(self) -> None:
        answer = await self.client.renew(identity.csr_pem(self.key, self.settings.hostname))
        self.cert = identity.Certificate.from_answer(answer)
        identity.save_certificate(self.settings.state_dir, self.cert)
        self.client.use(self.key, self.cert.certificate)
        log.info("certificate renewed until %s", self.cert.expires_at.isoformat())

    # -- desired state ---------------------------------------------------------------------------

    async def sync_access(self, wait: int) -> None:
        answer = await self.client.access(self.etag, wait)
        if answer.status == 200:
            self.desired, self.etag = answer.body, answer.etag
            if (answer.body or {}).get("renewCertificate") is True:
                # the project's X.509 CA rotated: renew while the old one is still trusted
                await self.renew()
                self.etag = None
        if self.desired is not None:
            failed = await asyncio.to_thread(self.apply, self.desired)
            if failed:
                self.etag = None  # ask for the whole state again (after the caller's backoff)
                raise ActionFailed(f"{failed} action(s) failed")

    def apply(self, desired: dict[str, Any]) -> int:
        """Plan and carry out one desired state; the number of actions that failed."""
        failed = 0
        keys = desired.get("trustedUserCAKeys")
        if isinstance(keys, str):
            try:
                if self.system.write_trusted_ca_keys(keys):
                    log.info("trusted user CA keys updated; sshd reloaded")
            except (ActionFailed, OSError) as exc:
                log.error("trusted user CA keys: %s", exc)
                failed += 1
        raw = desired.get("accounts")
        wanted, refused = plan.desired_from_json(raw if isinstance(raw, list) else [])
        record = state.load_record(self.record_path)
        result = plan.plan(
            wanted,
            record,
            self.system.read_local(),
            prefix=self.settings.prefix,
            uid_range=(self.settings.uid_min, self.settings.uid_max),
            now=self.clock(),
            grace=self.settings.grace,
        )
        refusals = {(r.name, r.reason) for r in (*refused, *result.refused)}
        for name, reason in sorted(refusals - self.refusals):  # each once, not at every long poll
            log.warning("account %s refused: %s", name, reason)
        self.refusals = refusals
        new = dict(result.record)
        deleting = {a.name for a in result.actions if isinstance(a, plan.DeleteAccount)}
        intent = new | {n: record[n] for n in deleting}
        if intent != record:
            state.save_record(self.record_path, intent)  # intent first: a crash repeats, never forgets
        broken: set[str] = set()  # accounts whose creation failed: nothing more is done for them
        for action in result.actions:
            if action.name in broken:
                failed += 1
                continue
            try:
                self.system.apply(action)
                log.info("done: %s", action)
            except (ActionFailed, OSError) as exc:
                failed += 1
                log.error("failed: %s: %s", action, exc)
                if isinstance(action, plan.CreateAccount):
                    # never write principals or sudo for a name that may now be someone else's
                    broken.add(action.name)
                if isinstance(action, (plan.RemovePrincipals, plan.RemoveSudoers, plan.EndSessions)):
                    new[action.name] = record[action.name]  # the removal starts again next time
                elif isinstance(action, plan.DeleteAccount):
                    new[action.name] = record[action.name]  # still ours: try again later
                elif action.name in new:
                    new[action.name] = replace(new[action.name], synced=False)  # rewrite its files
        if new != intent:
            state.save_record(self.record_path, new)
        return failed

    # -- login events ----------------------------------------------------------------------------

    def follower(self) -> tail.Follower:
        position = None
        with contextlib.suppress(OSError, ValueError):
            position = tail.load_position(json.loads(self.tail_path.read_text()))
        return tail.Follower(self.settings.auth_log, position)

    def save_position(self, follower: tail.Follower) -> None:
        pos = follower.position
        if pos is not None:
            write_atomic(self.tail_path, json.dumps({"inode": pos.inode, "offset": pos.offset}), mode=0o600)

    async def _post(self, events: list[dict[str, Any]]) -> None:
        try:
            await self.client.events(events)
        except BrokerError as exc:
            if exc.status not in DROP_STATUSES:
                raise
            log.error("the broker refused %d login events for good, dropped: %s", len(events), exc)

    async def send_events(self, events: list[dict[str, Any]]) -> bool:
        """Spooled batches first, then these (in batches of at most 100); spooled on failure."""
        size = self.settings.batch_events
        batches = [events[i : i + size] for i in range(0, len(events), size)]
        try:
            await self.spool.flush(self._post)
            while batches:
                await self._post(batches[0])
                batches.pop(0)
            return True
        except BrokerError as exc:
            log.warning("login events not sent (%s); spooling %d batch(es)", exc, len(batches))
            for batch in batches:
                self.spool.put(batch)
            return False

    def read_events(self, follower: tail.Follower) -> list[dict[str, Any]]:
        events = []
        for line in follower.poll():
            event = logins.parse_line(line, self.clock())
            if event is not None:
                events.append(event)
        return events

    async def logins_task(self) -> None:
        follower = self.follower()
        pending: list[dict[str, Any]] = []
        first = 0.0
        try:
            while not self.stop.is_set():
                new = await asyncio.to_thread(self.read_events, follower)
                if new and not pending:
                    first = time.monotonic()
                pending += new
                due = pending and time.monotonic() - first >= self.settings.batch_seconds
                if len(pending) >= self.settings.batch_events or due:
                    batch, pending = (
                        pending[: self.settings.batch_events],
                        pending[self.settings.batch_events :],
                    )
                    first = time.monotonic()
                    await self.send_events(batch)
                    self.save_position(follower)
                elif not pending and self.spool.files():
                    await self.send_events([])
                await self._sleep(self.settings.poll_seconds)
        finally:
            if pending:
                self.spool.put(pending)
            self.save_position(follower)
            follower.close()

    # -- the loops -------------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        return self.stop.is_set()

    def poll_wait(self) -> int:
        """How long the broker may hold the next access request: at most until the next removed
        account's grace period ends, so its deletion is on time (a scheduled deadline, not a poll)."""
        wait = self.settings.wait_seconds
        with contextlib.suppress(state.StateError, OSError):
            ends = [
                m.removed_at + self.settings.grace
                for m in state.load_record(self.record_path).values()
                if m.removed_at is not None
            ]
            if ends:
                wait = min(wait, max(0, math.ceil((min(ends) - self.clock()).total_seconds())))
        return wait

    async def access_task(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while not self.stop.is_set():
            try:
                await self.sync_access(self.poll_wait())
                backoff.reset()
            except (BrokerError, ActionFailed, state.StateError, OSError) as exc:
                delay = backoff.next()
                log.warning("access: %s; again in %.0fs", exc, delay)
                await self._sleep(delay)

    async def renewal_task(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while not self.stop.is_set():
            assert self.cert is not None
            wait = (self.cert.renew_after - self.clock()).total_seconds()
            if wait > 0:
                await self._sleep(min(wait, 300))
                continue
            try:
                await self.renew()
                backoff.reset()
            except (BrokerError, identity.IdentityError, OSError) as exc:
                delay = backoff.next()
                log.warning("certificate renewal: %s; again in %.0fs", exc, delay)
                await self._sleep(delay)

    async def run_once(self) -> int:
        await self.ensure_enrolled()
        code = 0
        assert self.cert is not None
        if self.cert.due(self.clock()):
            try:
                await self.renew()
            except (BrokerError, identity.IdentityError) as exc:
                log.error("certificate renewal: %s", exc)
                code = 1
        try:
            await self.sync_access(0)
        except (BrokerError, ActionFailed) as exc:
            log.error("access: %s", exc)
            code = 1
        follower = self.follower()
        try:
            events = await asyncio.to_thread(self.read_events, follower)
            if not await self.send_events(events):
                code = 1
            self.save_position(follower)
        finally:
            follower.close()
        return code

    async def run_forever(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        await self.ensure_enrolled()
        tasks = [
            asyncio.create_task(self.access_task(), name="access"),
            asyncio.create_task(self.logins_task(), name="logins"),
            asyncio.create_task(self.renewal_task(), name="renewal"),
        ]
        try:
            await self.stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.stop.set()
            for task in tasks:
                if task.get_name() == "access":
                    task.cancel()  # it may sit in a long poll
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, res in zip(tasks, results, strict=True):
                if isinstance(res, Exception):
                    log.error("%s task failed: %s", task.get_name(), res)
        log.info("stopped")
        return 0


def _addresses(hostname: str) -> list[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP):
            address = str(info[4][0])
            if not address.startswith(("127.", "::1")):
                found.add(address)
    return sorted(found)[:16]


async def main(settings: AgentSettings, system: System | None = None) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            agent = Agent(settings, system or System(settings), session)
            return await (agent.run_once() if settings.once else agent.run_forever())
        except (FatalError, identity.IdentityError, state.StateError) as exc:
            log.error("%s", exc)
            return 2
