"""A waiting line for a held shared account, kept on the account's Lease beside the hold.

The Lease holds the holder (``holderIdentity``, a Checkout's uid) and the line (an annotation with a
JSON list). Every change below is a pure function of (hold, line); the adapter writes its result with
the Lease's resourceVersion, so the API server decides the order: a line is the order in which it
accepted the appends, and no two replicas can reorder it. Handing over (the holder leaves, the head of
the line becomes the holder with an offer deadline) is one write, so nobody can take the account between
the release and the offer.

Phases of a queued checkout:  Pending -> Queued -> Offered -> Active | Expired (offer not claimed)
                              Queued | Offered -> Cancelled (check-in requested, or deleted)
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

DEFAULT_CLAIM_WINDOW = timedelta(minutes=5)  # CheckoutPolicySpec.claim_window's default


@dataclass(frozen=True)
class Hold:
    uid: str  # the Checkout's uid: the Lease's holderIdentity
    checkout: str
    holder: str
    expires_at: datetime | None
    offered: bool = False  # handed over from the line and not claimed yet: expires_at is the offer deadline


@dataclass(frozen=True)
class Waiting:
    uid: str  # the Checkout's uid
    checkout: str
    holder: str  # who asked (the Checkout's requester)
    joined_at: datetime


@dataclass(frozen=True)
class LeaseState:
    hold: Hold | None
    line: tuple[Waiting, ...] = ()

    def position(self, uid: str) -> int | None:
        return position(self.line, uid)


# ----- the line as the Lease annotation stores it -------------------------------------------------
def encode_line(line: Iterable[Waiting]) -> str:
    return json.dumps(
        [
            {"uid": w.uid, "checkout": w.checkout, "holder": w.holder, "joinedAt": w.joined_at.isoformat()}
            for w in line
        ],
        separators=(",", ":"),
    )


def decode_line(raw: str | None) -> tuple[Waiting, ...]:
    """The line from the annotation; entries that are not well-formed (only the operator writes it) are
    skipped rather than failing every checkout of the account."""
    if not raw:
        return ()
    try:
        entries: Any = json.loads(raw)
    except ValueError:
        return ()
    line: list[Waiting] = []
    seen: set[str] = set()
    for entry in entries if isinstance(entries, list) else []:
        try:
            waiting = Waiting(
                str(entry["uid"]),
                str(entry["checkout"]),
                str(entry["holder"]),
                datetime.fromisoformat(str(entry["joinedAt"])),
            )
        except (KeyError, TypeError, ValueError):
            continue
        if waiting.uid and waiting.uid not in seen:
            seen.add(waiting.uid)
            line.append(waiting)
    return tuple(line)


# ----- changes: each a pure function of the Lease's state -----------------------------------------
def take(state: LeaseState, want: Hold, waiting: Waiting | None) -> LeaseState:
    """Take the account if it is free and nobody waits for it; else join the line at its end if
    ``waiting`` is given (idempotent: a uid holding or already in line changes nothing)."""
    if (state.hold is not None and state.hold.uid == want.uid) or position(state.line, want.uid):
        return state
    if state.hold is None and not state.line:
        return LeaseState(want, ())
    if waiting is not None:  # held, or free with a line (after a crash): the head goes first
        return LeaseState(state.hold, (*state.line, waiting))
    return state


def leave(state: LeaseState, uid: str) -> LeaseState:
    return replace(state, line=tuple(w for w in state.line if w.uid != uid))


def handover(state: LeaseState, uid: str | None, offer_until: datetime) -> LeaseState:
    """The holder ``uid`` lets go (``None``: nobody holds it, e.g. it was freed before a crash): the head of
    the line becomes the holder with an offer until ``offer_until``, or the account is free. Changes
    nothing when someone else holds it (a repeated hand-over is a no-op)."""
    if state.hold is not None and state.hold.uid != uid:
        return state
    if not state.line:
        return LeaseState(None, ())
    head, *rest = state.line
    return LeaseState(Hold(head.uid, head.checkout, head.holder, offer_until, offered=True), tuple(rest))


# ----- what people see ----------------------------------------------------------------------------
def position(line: Iterable[Waiting], uid: str) -> int | None:
    """1-based place in line, or None."""
    return next((i for i, w in enumerate(line, start=1) if w.uid == uid), None)


def positions(line: Iterable[Waiting]) -> dict[str, int]:
    """Every uid's place: always 1..k with no gap, whatever left the line."""
    return {w.uid: i for i, w in enumerate(line, start=1)}


def estimate(
    hold: Hold | None, place: int, longest: timedelta, claim_window: timedelta, now: datetime
) -> datetime:
    """When the account should reach the one at ``place``: an upper bound as long as every checkout ahead
    keeps within the policy's maxDuration (``longest``). The holder's time runs to its expiry (an offer to
    its deadline, then a whole checkout); each one ahead in line may take the claim window and then a
    whole checkout. Rotations, approvals and an AccessPolicy rule granting more than maxDuration can
    make it later; checking in early makes it sooner."""
    end = hold.expires_at if hold is not None and hold.expires_at is not None else now + longest
    if hold is not None and hold.offered:
        end += longest
    return max(end, now) + (place - 1) * (claim_window + longest)


class Offer(enum.StrEnum):
    CLAIM = "Claim"  # the requester claimed it: the checkout starts now
    EXPIRE = "Expire"  # the deadline passed unclaimed: the offer passes to the next in line
    WAIT = "Wait"


def offer_outcome(claimed: bool, deadline: datetime | None, now: datetime) -> Offer:
    """What an offer comes to. A claim counts as long as the offer still stands when the operator reads it
    (even if that is after the deadline: the claim was made, the operator was slower); an offer without a
    deadline has already run out."""
    if claimed:
        return Offer.CLAIM
    if deadline is None or now >= deadline:
        return Offer.EXPIRE
    return Offer.WAIT
