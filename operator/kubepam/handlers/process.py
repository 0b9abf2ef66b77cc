"""The operator process: the VIEW half of the handlers on every replica (indexes, broker), the CONTROL
half only while this replica holds the leader Lease.

    start VIEW kopf (indexes, runtime, broker)  ->  elect  ->  leading: CONTROL kopf + fenced deadlines
                                                              lost the Lease: fence, stop, exit(1)

The CONTROL kopf is spawned in a context bound to the leader fence, so every task it starts, and every
deadline its handlers schedule, refuses to write once this replica stops leading. A replica that loses
the Lease exits (as controller-runtime's managers do) and its pod restarts it as a follower: kopf owns
the event loop it runs in and cancels every task in it when it stops, so a clean restart is the only
honest way back. On SIGTERM/SIGINT the leader steps down (frees the Lease) so another replica takes
over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import kopf

from kubepam.adapters import fencing, memory
from kubepam.adapters.leader_lease import LeaderLease
from kubepam.domain.leadership import Timing
from kubepam.handlers.registries import CONTROL, VIEW
from kubepam.handlers.runtime import SETTINGS, Runtime
from kubepam.services.leadership import LeaderElector
from kubepam.settings import Settings, configure_kopf

log = logging.getLogger("kubepam.process")


class AlwaysLeader:
    """Leader election switched off (one replica): this process always leads."""

    identity = "single"
    holder = "single"
    became_leader_at: float | None = 0.0

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def leading(self) -> bool:
        return True

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def step_down(self) -> None:
        return None


def _timing(settings: Settings) -> Timing:
    timing = Timing(
        settings.lease_duration.total_seconds(),
        settings.renew_deadline.total_seconds(),
        settings.retry_period.total_seconds(),
    )
    if problems := timing.problems():
        raise SystemExit(f"kubepam: {'; '.join(problems)}")
    return timing


# The view registry has no deletion handlers, so its kopf would remove any finalizer under its name
# that it finds (JitAccounts carry the control registry's): it gets a name of its own that it never adds.
VIEW_FINALIZER = "kubepam.io/view-never-set"


def _kopf_settings(registry: Any) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, SETTINGS)
    if registry is not CONTROL:
        settings.persistence.finalizer = VIEW_FINALIZER
    return settings


async def _spawn(registry: Any, memo: Any, stop: asyncio.Event) -> asyncio.Task[None]:
    existing = asyncio.all_tasks()  # kopf cancels every other task of the loop when it stops
    tasks = await kopf.spawn_tasks(
        registry=registry,
        settings=_kopf_settings(registry),
        memo=memo,
        clusterwide=True,
        standalone=True,
        stop_flag=stop,
    )
    name = "kopf control" if registry is CONTROL else "kopf view"
    return asyncio.create_task(kopf.run_tasks(tasks, ignored=existing), name=name)


async def _first(*aws: Any, within: float | None = None) -> None:
    """Wait until the first of these is done (or ``within`` seconds pass)."""
    waiters = [a if isinstance(a, asyncio.Task) else asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            if w not in aws:
                w.cancel()


async def serve() -> int:
    """Run until a signal (exit 0) or until this replica loses the leader Lease (exit 1)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def trap_signals() -> None:  # kopf installs its own on every spawn: ours must be the last word
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)

    memo = kopf.Memo()
    view_stop, control_stop = asyncio.Event(), asyncio.Event()
    view = await _spawn(VIEW, memo, view_stop)
    trap_signals()
    while getattr(memo, "runtime", None) is None:  # the VIEW start-up builds the runtime and the broker
        await _first(view, stopping.wait(), within=0.1)
        if view.done() or stopping.is_set():
            break
    rt: Runtime | None = getattr(memo, "runtime", None)
    elector: LeaderElector | AlwaysLeader
    if SETTINGS.leader_election:
        elector = LeaderElector(
            LeaderLease(SETTINGS.namespace, SETTINGS.lease_name), SETTINGS.identity, _timing(SETTINGS)
        )
    else:
        elector = AlwaysLeader()
    if rt is not None:
        rt.elector = elector
    electing = asyncio.create_task(elector.run(), name="leader election")
    trimming = asyncio.create_task(
        memory.trim_every(SETTINGS.memory_trim_interval.total_seconds()), name="memory trim"
    )
    control: asyncio.Task[None] | None = None
    code = 0
    try:
        while rt is not None and not stopping.is_set() and not view.done():
            elector.changed.clear()
            if control is None and elector.leading():
                log.info("%s leads: reconciling and running deadlines", elector.identity)
                token = fencing.bind(elector.leading)
                try:
                    control = await _spawn(CONTROL, memo, control_stop)
                finally:
                    fencing.unbind(token)
                trap_signals()
            elif control is not None and (not elector.leading() or control.done()):
                log.error(
                    "%s lost the leader Lease: stopping so that the pod restarts as a follower",
                    elector.identity,
                )
                code = 1
                break
            # re-check at least every second: leading() lapses by the clock even if the loop is slow
            await _first(
                elector.changed.wait(), stopping.wait(), view, *([control] if control else []), within=1.0
            )
        if not stopping.is_set() and (rt is None or view.done()):
            log.error("the operator's watches stopped (see above): exiting so that the pod restarts")
            code = code or 1
    finally:
        if rt is not None:
            rt.scheduler.drop_fenced()
        control_stop.set()
        if control is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(control, timeout=10)
        electing.cancel()
        trimming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await electing
        if code == 0:
            await elector.step_down()
        view_stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await view
    return code
