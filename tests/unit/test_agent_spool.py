"""The agent's spool of unsent login events, and the log follower that feeds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepam.agent.spool import Spool
from kubepam.agent.tail import Follower, Position


def ev(n: int) -> dict[str, object]:
    return {"user": f"u{n}", "outcome": "accepted"}


async def test_oldest_first_and_removed_once_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for n in range(3):
        spool.put([ev(n)])
    got: list[object] = []

    async def send(events: list[dict[str, object]]) -> None:
        got.append(events[0]["user"])

    assert await spool.flush(send) == 3
    assert got == ["u0", "u1", "u2"]
    assert spool.files() == []


async def test_a_failure_stops_the_flush_and_keeps_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for n in range(3):
        spool.put([ev(n)])
    calls = 0

    async def send(events: list[dict[str, object]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await spool.flush(send)
    assert [spool.load(p) for p in spool.files()] == [[ev(1)], [ev(2)]]


def test_at_most_limit_files_dropping_the_oldest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", limit=5)
    for n in range(8):
        spool.put([ev(n)])
    files = spool.files()
    assert len(files) == 5
    assert [spool.load(p) for p in files] == [[ev(n)] for n in range(3, 8)]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)


async def test_unreadable_batches_are_dropped_not_blocking(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put([ev(1)])
    (tmp_path / "spool" / "00000000000000000000-000000.json").write_text("{broken")
    sent: list[object] = []

    async def send(events: list[dict[str, object]]) -> None:
        sent.append(events)

    assert await spool.flush(send) == 1
    assert sent == [[ev(1)]] and spool.files() == []


def test_follower_starts_at_the_end_and_survives_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("old line\n")
    follow = Follower(log)
    assert follow.poll() == []
    with log.open("a") as f:
        f.write("one\ntw")
    assert follow.poll() == ["one"]
    with log.open("a") as f:
        f.write("o\n")
    assert follow.poll() == ["two"]
    # rotation: the old file moves away (one more line lands in it), a new one starts
    with log.open("a") as f:
        f.write("last of old\n")
    log.rename(tmp_path / "auth.log.1")
    log.write_text("first of new\n")
    assert follow.poll() == ["last of old", "first of new"]
    # truncation in place
    log.write_text("")
    assert follow.poll() == []
    log.write_text("after truncate\n")
    assert follow.poll() == ["after truncate"]
    follow.close()


def test_follower_bounded_reads_and_long_lines(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    follow = Follower(log, max_read=64, max_line=32)
    follow.poll()
    with log.open("a") as f:
        f.write("x" * 100 + "\nshort\n" + "y" * 40 + "\nend\n")
    lines: list[str] = []
    for _ in range(10):
        lines += follow.poll()
    assert lines == ["short", "end"]  # over-long lines dropped whole, never cut


def test_a_restart_inside_an_over_long_line_drops_it_whole(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("")
    follow = Follower(log, max_read=16, max_line=32)
    follow.poll()
    with log.open("a") as f:
        f.write("x" * 40 + "Accepted publickey for root\nnext\n")
    for _ in range(3):
        assert follow.poll() == []  # 48 bytes read: inside the long line, already dropping it
    saved = follow.position
    assert saved is not None and saved.offset == 0
    follow.close()
    again = Follower(log, saved, max_read=16, max_line=32)
    lines: list[str] = []
    for _ in range(10):
        lines += again.poll()
    assert lines == ["next"]  # never the long line's tail as a line of its own
    again.close()


def test_follower_resumes_from_a_saved_position(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("a\n")
    follow = Follower(log)
    follow.poll()
    saved = follow.position
    follow.close()
    assert saved == Position(log.stat().st_ino, 2)
    with log.open("a") as f:
        f.write("b\n")
    again = Follower(log, saved)
    assert again.poll() == ["b"]
    again.close()
    # the saved file was rotated away meanwhile: the new file is read from its start
    log.rename(tmp_path / "auth.log.1")
    log.write_text("c\n")
    third = Follower(log, Position((tmp_path / "auth.log.1").stat().st_ino, 4))
    assert third.poll() == ["c"]
    third.close()


def test_follower_of_a_missing_file_reads_it_from_the_start_once_it_appears(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    follow = Follower(log)
    assert follow.poll() == []
    log.write_text("hello\n")
    assert follow.poll() == ["hello"]
    follow.close()
