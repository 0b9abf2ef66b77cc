"""The waiting line's rules, table-driven: taking or joining, leaving, handing over in one step,
positions without gaps, the estimate (an upper bound), what an offer comes to, and the annotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubepam.domain.queue import (
    Hold,
    LeaseState,
    Offer,
    Waiting,
    decode_line,
    encode_line,
    estimate,
    handover,
    leave,
    offer_outcome,
    position,
    positions,
    take,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
UNTIL = T0 + timedelta(minutes=5)


def hold(uid: str, *, offered: bool = False, until: datetime | None = T0 + timedelta(minutes=20)) -> Hold:
    return Hold(uid, f"co-{uid}", f"user-{uid}", until, offered)


def waiting(uid: str) -> Waiting:
    return Waiting(uid, f"co-{uid}", f"user-{uid}", T0)


def line(*uids: str) -> tuple[Waiting, ...]:
    return tuple(waiting(u) for u in uids)


def uids(state: LeaseState) -> tuple[str | None, list[str]]:
    return (state.hold.uid if state.hold else None, [w.uid for w in state.line])


@pytest.mark.parametrize(
    ("before", "who", "queue", "after"),
    [
        (LeaseState(None), "a", False, ("a", [])),  # free: taken
        (LeaseState(None), "a", True, ("a", [])),  # free: taken, not queued
        (LeaseState(hold("a")), "a", False, ("a", [])),  # ours already: unchanged
        (LeaseState(hold("a")), "b", False, ("a", [])),  # held, not queueing: refused
        (LeaseState(hold("a")), "b", True, ("a", ["b"])),  # held: joins the line
        (LeaseState(hold("a"), line("b")), "c", True, ("a", ["b", "c"])),  # at the end
        (LeaseState(hold("a"), line("b", "c")), "b", True, ("a", ["b", "c"])),  # already in line: no 2nd
        (LeaseState(None, line("b")), "c", False, (None, ["b"])),  # free with a line: the head first
        (LeaseState(None, line("b")), "c", True, (None, ["b", "c"])),  # ... so a newcomer joins
        (LeaseState(hold("b", offered=True), line("c")), "d", True, ("b", ["c", "d"])),  # an offer holds
    ],
)
def test_take_or_join(before: LeaseState, who: str, queue: bool, after: tuple[str | None, list[str]]) -> None:
    assert uids(take(before, hold(who), waiting(who) if queue else None)) == after


@pytest.mark.parametrize(
    ("before", "who", "after"),
    [
        (LeaseState(hold("a"), line("b", "c", "d")), "c", ("a", ["b", "d"])),
        (LeaseState(hold("a"), line("b", "c")), "b", ("a", ["c"])),
        (LeaseState(hold("a"), line("b")), "x", ("a", ["b"])),  # not in line: nothing
        (LeaseState(hold("a"), line("b")), "a", ("a", ["b"])),  # the holder does not leave this way
    ],
)
def test_leave(before: LeaseState, who: str, after: tuple[str | None, list[str]]) -> None:
    assert uids(leave(before, who)) == after


@pytest.mark.parametrize(
    ("before", "releasing", "after", "offered"),
    [
        (LeaseState(hold("a"), line("b", "c")), "a", ("b", ["c"]), True),  # head gets an offer
        (LeaseState(hold("a")), "a", (None, []), False),  # nobody waits: free
        (LeaseState(hold("b", offered=True), line("c")), "a", ("b", ["c"]), True),  # done already: no-op
        (LeaseState(hold("x"), line("c")), "a", ("x", ["c"]), False),  # another holds: no-op
        (LeaseState(None, line("b", "c")), None, ("b", ["c"]), True),  # free with a line: repaired
        (LeaseState(None, line("b")), "a", ("b", []), True),  # released before a crash: offered now
        (LeaseState(hold("b", offered=True), line("c")), "b", ("c", []), True),  # an offer passes on
    ],
)
def test_handover_is_one_step(
    before: LeaseState, releasing: str | None, after: tuple[str | None, list[str]], offered: bool
) -> None:
    result = handover(before, releasing, UNTIL)
    assert uids(result) == after
    assert (result.hold is not None and result.hold.offered) == offered
    if offered and result != before:
        assert result.hold is not None and result.hold.expires_at == UNTIL
        assert result.hold.holder == f"user-{result.hold.uid}"


def test_positions_have_no_gap_whatever_leaves() -> None:
    current = LeaseState(hold("h"), line("a", "b", "c", "d", "e"))
    for who in ("c", "a", "e"):
        current = leave(current, who)
        assert sorted(positions(current.line).values()) == list(range(1, len(current.line) + 1))
    assert positions(current.line) == {"b": 1, "d": 2}
    assert position(current.line, "d") == 2 and position(current.line, "a") is None
    assert current.position("b") == 1


LONGEST, WINDOW = timedelta(minutes=30), timedelta(minutes=5)


@pytest.mark.parametrize(
    ("holder", "place", "now", "expected"),
    [
        (hold("h", until=T0 + timedelta(minutes=20)), 1, T0, T0 + timedelta(minutes=20)),
        (hold("h", until=T0 + timedelta(minutes=20)), 3, T0, T0 + timedelta(minutes=20 + 2 * 35)),
        # an offer's holder may still claim and keep it a whole checkout
        (hold("h", offered=True, until=T0 + timedelta(minutes=5)), 1, T0, T0 + timedelta(minutes=35)),
        # the holder's time is up but its check-in (rotation) is not done: from now
        (hold("h", until=T0 - timedelta(minutes=1)), 2, T0, T0 + timedelta(minutes=35)),
        (None, 1, T0, T0 + timedelta(minutes=30)),  # nobody holds it (a crash): a checkout's length
        (hold("h", until=None), 1, T0, T0 + timedelta(minutes=30)),
    ],
)
def test_the_estimate_is_an_upper_bound_within_the_policy(
    holder: Hold | None, place: int, now: datetime, expected: datetime
) -> None:
    assert estimate(holder, place, LONGEST, WINDOW, now) == expected


def test_the_estimate_grows_with_the_place() -> None:
    times = [estimate(hold("h"), p, LONGEST, WINDOW, T0) for p in range(1, 6)]
    assert times == sorted(times) and len(set(times)) == 5


@pytest.mark.parametrize(
    ("claimed", "deadline", "now", "outcome"),
    [
        (False, UNTIL, T0, Offer.WAIT),
        (False, UNTIL, UNTIL - timedelta(seconds=1), Offer.WAIT),
        (False, UNTIL, UNTIL, Offer.EXPIRE),  # the deadline itself is too late
        (False, None, T0, Offer.EXPIRE),
        (True, UNTIL, T0, Offer.CLAIM),
        (True, UNTIL, UNTIL + timedelta(seconds=3), Offer.CLAIM),  # read late, but the offer still stood
    ],
)
def test_what_an_offer_comes_to(
    claimed: bool, deadline: datetime | None, now: datetime, outcome: Offer
) -> None:
    assert offer_outcome(claimed, deadline, now) is outcome


def test_the_line_round_trips_through_the_annotation() -> None:
    original = line("a", "b", "c")
    assert decode_line(encode_line(original)) == original
    assert encode_line(()) == "[]" and decode_line("") == () and decode_line(None) == ()


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("not json", []),
        ('{"uid": "a"}', []),  # not a list
        ('[{"uid": "a"}]', []),  # incomplete
        ('[{"uid": "a", "checkout": "x", "holder": "u", "joinedAt": "yesterday"}]', []),
        (
            '[{"uid": "a", "checkout": "x", "holder": "u", "joinedAt": "2026-01-01T12:00:00+00:00"},'
            ' {"uid": "a", "checkout": "x", "holder": "u", "joinedAt": "2026-01-01T12:00:00+00:00"},'
            " 7,"
            ' {"uid": "b", "checkout": "y", "holder": "v", "joinedAt": "2026-01-01T12:00:01+00:00"}]',
            ["a", "b"],  # a duplicate and a stray entry are dropped, the order kept
        ),
    ],
)
def test_a_damaged_annotation_keeps_what_is_well_formed(raw: str, kept: list[str]) -> None:
    assert [w.uid for w in decode_line(raw)] == kept
