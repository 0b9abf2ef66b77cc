"""The waiting line for a shared account on the checkout service (fakes): joining in order with positions
and estimates, the hand-over after the holder's check-in and rotation, claims (at once or later), offers
that run out and pass on without a rotation, cancels and deletions that leave the line, an orphaned
holder's account going to the line, and the scheduler carrying a turn through to Active."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

from kubepam.domain.conditions import rfc3339
from tests.handlers.test_checkout_service import NS, World


class _Recorder(list[str]):
    def append_ns(self, namespace: str, name: str) -> None:
        assert namespace == NS
        self.append(name)


class Line(World):
    """A world whose service's enqueues are recorded, so a test sees who is told to move and runs them."""

    def __init__(self, **policy: Any) -> None:
        super().__init__(
            **{
                "rotation": {"onUserCheckin": True},
                "checkout": {"claimWindow": "1m"},
                **policy,
            }
        )
        self.enqueued = _Recorder()
        self.service.enqueue = self.enqueued.append_ns  # type: ignore[method-assign]

    async def drain(self) -> list[str]:
        """Reconcile everything the service enqueued, in order, until nothing more is; returns who ran."""
        ran: list[str] = []
        while self.enqueued:
            name = self.enqueued.pop(0)
            ran.append(name)
            await self.service.reconcile(NS, name)
        return ran

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.objects.items[("checkouts", NS, name)].get("status") or {})

    def spec(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.objects.items[("checkouts", NS, name)]["spec"]
        return spec

    def line(self) -> list[str]:
        """The one account's waiting line, in order."""
        return [w.checkout for line in self.leases.lines.values() for w in line]

    def holder(self) -> str | None:
        held = list(self.leases.held.values())
        return held[0].checkout if held else None

    def positions(self) -> dict[str, int]:
        """Every Queued checkout's written position."""
        return {
            name: obj["status"]["queue"]["position"]
            for (_, _, name), obj in self.objects.items.items()
            if (obj.get("status") or {}).get("phase") == "Queued"
        }

    def reasons(self) -> list[tuple[str, str]]:
        return [(n, r) for n, r, _ in self.events.seen]


async def holder_and_waiting(w: Line, *waiting: str, claim: bool = True) -> None:
    w.create("h", "holder")
    assert (await w.step("h"))["phase"] == "Active"
    for name in waiting:
        w.create(name, f"user-{name}", queue=True, claim=claim)
        assert (await w.step(name))["phase"] == "Queued"


async def test_a_held_account_queues_in_creation_order_with_positions_and_estimates() -> None:
    w = Line()
    await holder_and_waiting(w, "b", "c", "d")
    assert w.line() == ["b", "c", "d"] and w.positions() == {"b": 1, "c": 2, "d": 3}
    holder_ends = w.status("h")["expiresAt"]  # the rule's 20m
    b, d = w.status("b")["queue"], w.status("d")["queue"]
    assert b["estimatedAt"] == holder_ends and b["joinedAt"] == rfc3339(w.clock.now)
    # upper bound: each one ahead may take the claim window (1m) and a whole checkout (maxDuration 30m)
    assert d["estimatedAt"] == rfc3339(w.clock.now + timedelta(minutes=20) + 2 * timedelta(minutes=31))
    assert "#3 in line for admin (held by holder)" in w.status("d")["message"]
    assert ("b", "Queued") in w.reasons()
    assert await w.step("b") == w.status("b") and w.line() == ["b", "c", "d"]  # idempotent: no second place
    assert w.enqueued == []  # joining at the end moves nobody
    w.create("e", "user-e")  # no spec.queue: refused as before
    denied = await w.step("e")
    assert denied["phase"] == "Denied" and "checked out by holder until" in denied["message"]
    assert "queue" not in denied and w.line() == ["b", "c", "d"]


async def test_checkin_rotates_then_offers_the_head_and_renumbers_the_rest() -> None:
    w = Line()
    await holder_and_waiting(w, "b", claim=False)
    w.create("c", "user-c", queue=True, claim=True)
    await w.step("c")
    before = w.password()
    w.spec("h")["checkin"] = {"requested": True}
    done = await w.step("h")
    assert done["phase"] == "CheckedIn" and done["rotation"]["completedAt"] and w.password() != before
    hold = next(iter(w.leases.held.values()))
    assert hold.checkout == "b" and hold.offered and hold.expires_at == w.clock.now + timedelta(minutes=1)
    assert w.line() == ["c"] and sorted(w.enqueued) == ["b", "c"]  # the offered one and everyone behind
    await w.drain()
    offered = w.status("b")
    assert offered["phase"] == "Offered" and "queue" not in offered
    assert offered["offer"]["expiresAt"] == rfc3339(w.clock.now + timedelta(minutes=1))
    assert "claim it (kubepam claim b)" in offered["message"]
    assert w.positions() == {"c": 1} and w.status("c")["queue"]["estimatedAt"] == rfc3339(
        w.clock.now + timedelta(minutes=1 + 30)  # the offer's deadline, then a whole checkout
    )
    assert w.scheduler.deadline(("checkouts", f"{NS}/b")) == w.clock.now + timedelta(minutes=1)
    assert w.service.due(w.objects.items[("checkouts", NS, "b")]) == w.clock.now + timedelta(minutes=1)
    order = w.reasons()
    assert order.index(("h", "Rotated")) < order.index(("b", "Offered"))  # rotation first, then the offer
    # the claim (a spec change, which kopf's update handler enqueues) starts the checkout's own time
    w.clock.advance(seconds=30)
    w.spec("b")["claim"] = True
    active = await w.step("b")
    assert active["phase"] == "Active" and active["holder"] == "user-b"
    assert active["grantedAt"] == rfc3339(w.clock.now)
    assert active["expiresAt"] == rfc3339(w.clock.now + timedelta(minutes=20))
    assert w.rbac.readers[(NS, active["secretName"])] == "user-b"
    hold = next(iter(w.leases.held.values()))
    assert not hold.offered and hold.expires_at == w.clock.now + timedelta(minutes=20)
    await w.drain()  # c's estimate follows the claim
    assert w.status("c")["queue"]["estimatedAt"] == active["expiresAt"]


async def test_a_claim_made_while_queued_takes_the_account_when_its_turn_comes() -> None:
    w = Line()
    await holder_and_waiting(w, "b", "c")
    w.spec("h")["checkin"] = {"force": True}
    assert (await w.step("h"))["phase"] == "CheckedIn"
    assert await w.drain() == ["b", "c", "c"]  # b's turn; c renumbered, then again after b's claim
    assert w.status("b")["phase"] == "Active" and w.holder() == "b"
    assert [r for n, r in w.reasons() if n == "b"][-2:] == ["Offered", "CheckedOut"]
    assert w.positions() == {"c": 1}


async def test_an_unclaimed_offer_expires_and_passes_on_without_a_rotation() -> None:
    w = Line()
    await holder_and_waiting(w, "b", claim=False)
    w.create("c", "user-c", queue=True, claim=True)
    await w.step("c")
    w.spec("h")["checkin"] = {"requested": True}
    await w.step("h")
    await w.drain()
    assert w.status("b")["phase"] == "Offered"
    password = w.password()
    w.clock.advance(seconds=59)
    assert (await w.step("b"))["phase"] == "Offered" and w.enqueued == []  # still its offer
    w.clock.advance(seconds=1)
    expired = await w.step("b")
    assert expired["phase"] == "Expired" and expired["message"] == "offer not claimed within 1m"
    assert ("b", "OfferExpired") in w.reasons() and w.scheduler.deadline(("checkouts", f"{NS}/b")) is None
    assert w.password() == password  # the credential was never handed out: nothing to rotate
    assert w.enqueued == ["c"]
    await w.drain()
    assert w.status("c")["phase"] == "Active" and w.holder() == "c" and w.line() == []
    assert w.password() == password


async def test_cancel_and_delete_leave_the_line_and_the_rest_renumber() -> None:
    w = Line()
    await holder_and_waiting(w, "b", "c", "d", "e", claim=False)
    w.spec("c")["checkin"] = {"requested": True}
    cancelled = await w.step("c")
    assert cancelled["phase"] == "Cancelled" and "queue" not in cancelled
    assert cancelled["message"] == "left the line"
    assert w.line() == ["b", "d", "e"] and w.enqueued == ["b", "d", "e"]
    await w.drain()
    assert w.positions() == {"b": 1, "d": 2, "e": 3}
    gone = w.objects.items.pop(("checkouts", NS, "b"))  # deleted while waiting
    await w.service.abandoned(gone)
    await w.drain()
    assert w.line() == ["d", "e"] and w.positions() == {"d": 1, "e": 2}
    # cancelling an offer passes it on at once
    w.spec("h")["checkin"] = {"requested": True}
    await w.step("h")
    await w.drain()
    assert w.status("d")["phase"] == "Offered"
    w.spec("d")["checkin"] = {"requested": True}
    assert (await w.step("d"))["phase"] == "Cancelled"
    assert w.holder() == "e" and w.enqueued == ["e"]
    await w.drain()
    assert w.status("e")["phase"] == "Offered" and w.positions() == {}
    # deleting an offered checkout passes it on too (and frees the account when nobody waits)
    offered = w.objects.items.pop(("checkouts", NS, "e"))
    await w.service.abandoned(offered)
    assert w.leases.held == {} and w.leases.lines == {}
    w.create("f", "user-f")
    assert (await w.step("f"))["phase"] == "Active"


async def test_an_orphaned_holder_hands_the_account_to_the_line() -> None:
    w = Line()
    await holder_and_waiting(w, "b")
    password = w.password()
    w.objects.items.pop(("checkouts", NS, "h"))  # deleted while the operator was away: no event seen
    w.create("c", "user-c", queue=True)
    queued = await w.step("c")  # its take finds the holder gone: forced check-in, then b's turn
    assert w.password() != password  # rotate on forced check-in (the holder had the credential)
    assert w.holder() == "b" and queued["phase"] == "Queued" and queued["queue"]["position"] == 1
    await w.drain()
    assert w.status("b")["phase"] == "Active"


async def test_a_free_account_with_a_line_goes_to_the_head_first() -> None:
    w = Line()
    await holder_and_waiting(w, "b")
    w.leases.held.clear()  # freed without a hand-over (e.g. an older operator's release before a crash)
    w.create("c", "user-c")
    denied = await w.step("c")
    assert denied["phase"] == "Denied" and "checked out by user-b" in denied["message"]
    assert w.holder() == "b" and w.enqueued == ["b"]
    await w.drain()
    assert w.status("b")["phase"] == "Active"


async def test_ghosts_in_the_line_are_passed_over_and_removed() -> None:
    w = Line()
    await holder_and_waiting(w, "b", "c", "d")
    w.objects.items.pop(("checkouts", NS, "b"))  # deleted, the event missed: still first in line
    w.objects.items.pop(("checkouts", NS, "c"))
    w.spec("h")["checkin"] = {"requested": True}
    await w.step("h")
    assert w.holder() == "d" and w.line() == []
    await w.drain()
    assert w.status("d")["phase"] == "Active"


async def test_positions_are_always_1_to_k_in_join_order() -> None:
    rng = random.Random(15)
    w = Line()
    w.create("h", "holder")
    await w.step("h")
    joined: list[str] = []
    for i in range(40):
        if joined and rng.random() < 0.35:
            leaving = rng.choice(joined)
            joined.remove(leaving)
            w.spec(leaving)["checkin"] = {"requested": True}
            assert (await w.step(leaving))["phase"] == "Cancelled"
        else:
            name = f"q{i:02d}"
            w.create(name, f"user-{name}", queue=True)
            await w.step(name)
            joined.append(name)
        await w.drain()
        assert w.line() == joined
        assert w.positions() == {name: place for place, name in enumerate(joined, start=1)}


async def test_the_scheduler_carries_a_turn_through_to_active() -> None:
    """No manual draining: the service's own enqueue reaches the reconcile through the scheduler."""
    w = World(rotation={"onUserCheckin": True}, checkout={"claimWindow": "1m"})
    w.create("h", "holder")
    await w.step("h")
    w.create("b", "user-b", queue=True, claim=True)
    w.create("c", "user-c", queue=True, claim=True)
    assert (await w.step("b"))["queue"]["position"] == 1 and (await w.step("c"))["queue"]["position"] == 2
    w.objects.items[("checkouts", NS, "h")]["spec"]["checkin"] = {"requested": True}
    runner = asyncio.create_task(w.scheduler.run())
    try:
        await w.service.reconcile(NS, "h")
        for _ in range(200):
            await asyncio.sleep(0.01)
            c = w.objects.items[("checkouts", NS, "c")]["status"]
            if c.get("queue", {}).get("position") == 1:
                break
    finally:
        runner.cancel()
    assert w.objects.items[("checkouts", NS, "b")]["status"]["phase"] == "Active"
    assert w.objects.items[("checkouts", NS, "c")]["status"]["queue"]["position"] == 1
