"""Login events from sshd's log lines, PURE: a line in, the protocol's event dict (section 5) or None.

The formats are OpenSSH's (auth.c auth_log, auth2-pubkey.c; checked against a real sshd 9.2):

    Accepted publickey for alice from 127.0.0.1 port 50022 ssh2: ED25519-CERT SHA256:abc ID
        kubepam:team-a/req-1:alice (serial 123) CA ED25519 SHA256:def
    Failed publickey for root from 127.0.0.1 port 40032 ssh2: ED25519 SHA256:4ZFU...
    Failed password for invalid user bob from 10.0.0.9 port 2222 ssh2

either bare (sshd -e, journald) or behind a syslog prefix (`Nov 22 10:00:00 host sshd[123]: ` or
rsyslog's RFC 3339 `2026-11-22T10:00:00.123456+00:00 host sshd[123]: `).

The user name is chosen by whoever connects and a failed certificate's key id by whoever signed it,
so both may hold " from ", " port " or "ssh2: ": the parser tries every place the `from ... port ...
ssh2` part could start and keeps the line only when exactly one reading is consistent (the user at
most 100 characters as sshd prints it, the rest a well-formed key description); an ambiguous line is
dropped rather than reported wrongly. Every field is bounded as the protocol says.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_LINE = 8192
MAX_USER, MAX_KEY_ID, MAX_SOURCE = 32, 256, 64

_SYSLOG = re.compile(
    r"^(?:(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?"
    r"(?:Z|[+-]\d\d:\d\d)))"
    r" \S+ sshd(?:-session|-auth)?\[\d+\]: "
)
_HEAD = re.compile(r"^(?P<outcome>Accepted|Failed) (?P<method>[a-z][a-z0-9/-]{0,63}) for (?P<rest>.*)$")
_TAIL = re.compile(r" from (?P<source>\S{1,200}) port (?P<port>\d{1,5}) ssh2(?:: (?P<info>.*))?$")
_KEY = re.compile(
    r"^(?P<type>[A-Z0-9@.-]+) (?P<fp>[A-Za-z0-9]+:\S+)"
    r"(?: ID (?P<id>.*) \(serial (?P<serial>\d{1,20})\) CA (?P<catype>[A-Z0-9@.-]+) (?P<cafp>\S+))?$"
)
_INVALID = "invalid user "


def parse_line(line: str, now: datetime) -> dict[str, Any] | None:
    """One log line -> an event dict, or None when it is not a login line (or not one we can read
    unambiguously). `now` dates bare lines and supplies the year a BSD syslog timestamp lacks."""
    if len(line) > MAX_LINE:
        return None
    line = line.rstrip("\r\n")
    when = now
    prefix = _SYSLOG.match(line)
    if prefix:
        when = _syslog_time(prefix.group("bsd"), prefix.group("iso"), now)
        line = line[prefix.end() :]
    line = line.removesuffix(" [preauth]")
    head = _HEAD.match(line)
    if head is None:
        return None
    rest = head.group("rest")
    readings = []
    start = rest.find(" from ")
    while start != -1:
        found = _reading(rest, start)
        if found is not None:
            readings.append(found)
        start = rest.find(" from ", start + 1)
    if len(readings) != 1:
        return None
    user, source, port, key_id, serial = readings[0]
    return {
        "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "user": user[:MAX_USER],
        "source": source[:MAX_SOURCE],
        "port": port,
        "method": head.group("method"),
        "keyId": key_id[:MAX_KEY_ID],
        "serial": serial,
        "outcome": head.group("outcome").lower(),
    }


def _reading(rest: str, start: int) -> tuple[str, str, int, str, str] | None:
    user = rest[:start].removeprefix(_INVALID)
    if not user or len(user) > 100:  # sshd prints the user as %.100s
        return None
    tail = _TAIL.match(rest, start)
    if tail is None:
        return None
    port = int(tail.group("port"))
    if port > 65535:
        return None
    info = tail.group("info")
    key_id = serial = ""
    if info is not None:
        key = _KEY.match(info)
        if key is None:
            return None
        key_id, serial = key.group("id") or "", key.group("serial") or ""
    return user, tail.group("source"), port, key_id, serial


def _syslog_time(bsd: str | None, iso: str | None, now: datetime) -> datetime:
    if iso is not None:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    assert bsd is not None
    local = now.astimezone()  # BSD syslog stamps are local time without a year
    try:
        when = datetime.strptime(f"{local.year} {' '.join(bsd.split())}", "%Y %b %d %H:%M:%S")
    except ValueError:
        return now
    when = when.replace(tzinfo=local.tzinfo)
    if when - local > timedelta(days=1):  # a December line read in January
        when = when.replace(year=local.year - 1)
    return when
