"""sshd log lines -> login events (kubepam.agent.logins). The formats are those of a real OpenSSH 9.2
sshd (captured from tests/sshd.py's loopback sshd) and of Debian's rsyslog auth.log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubepam.agent.logins import parse_line

NOW = datetime(2026, 11, 22, 10, 5, tzinfo=UTC)
CERT = (
    "ED25519-CERT SHA256:4ZFUiOOEgw4kgBjDC8JmPGmZmKruiSntoLFBSTi80L4 ID {id} (serial {serial}) "
    "CA ED25519 SHA256:4JNfhIePqUMSg2LYOurhvK8Cr7DeCVIO1JLrPv0sQUU"
)
ACCEPTED = "Accepted publickey for alice from 127.0.0.1 port 50022 ssh2: " + CERT.format(
    id="kubepam:team-a/req-1:alice", serial=123
)


def event(**fields):
    base = {
        "time": "2026-11-22T10:05:00Z",
        "user": "alice",
        "source": "127.0.0.1",
        "port": 50022,
        "method": "publickey",
        "keyId": "kubepam:team-a/req-1:alice",
        "serial": "123",
        "outcome": "accepted",
    }
    return base | fields


CASES = [
    ("sshd -e, certificate accepted", ACCEPTED, event()),
    ("sshd -E log file: CRLF line ends", ACCEPTED + "\r", event()),
    (
        "rsyslog RFC 3339 prefix",
        "2026-11-22T09:59:58.123456+00:00 web-1 sshd[4242]: " + ACCEPTED,
        event(time="2026-11-22T09:59:58Z"),
    ),
    (
        "sshd-session (OpenSSH 9.8+) process name",
        "2026-11-22T09:59:58+01:00 web-1 sshd-session[4242]: " + ACCEPTED,
        event(time="2026-11-22T08:59:58Z"),
    ),
    (
        "failed certificate from an unknown CA, key id with spaces",
        "Failed publickey for root from 127.0.0.1 port 40032 ssh2: "
        + CERT.format(id="evil id with spaces", serial=7),
        event(user="root", port=40032, keyId="evil id with spaces", serial="7", outcome="failed"),
    ),
    (
        "failed plain key",
        "Failed publickey for root from 127.0.0.1 port 40032 ssh2: "
        "ED25519 SHA256:4ZFUiOOEgw4kgBjDC8JmPGmZmKruiSntoLFBSTi80L4",
        event(user="root", port=40032, keyId="", serial="", outcome="failed"),
    ),
    (
        "failed password for an invalid user, IPv6",
        "Failed password for invalid user bob from 2001:db8::1 port 2222 ssh2",
        event(
            user="bob",
            source="2001:db8::1",
            port=2222,
            method="password",
            keyId="",
            serial="",
            outcome="failed",
        ),
    ),
    (
        "keyboard-interactive/pam, preauth suffix",
        "Failed keyboard-interactive/pam for carol from 10.0.0.9 port 1 ssh2 [preauth]",
        event(
            user="carol",
            source="10.0.0.9",
            port=1,
            method="keyboard-interactive/pam",
            keyId="",
            serial="",
            outcome="failed",
        ),
    ),
    (
        "non-kubepam key id is kept as it is (the broker decides)",
        "Accepted publickey for alice from 127.0.0.1 port 50022 ssh2: "
        + CERT.format(id="someone@laptop", serial=0),
        event(keyId="someone@laptop", serial="0"),
    ),
    (
        "a user name holding ' from ' and a fake tail",
        "Failed none for invalid user x from 6.6.6.6 port 1 ssh2 from 10.0.0.1 port 5555 ssh2",
        event(
            user="x from 6.6.6.6 port 1 ssh2",
            source="10.0.0.1",
            port=5555,
            method="none",
            keyId="",
            serial="",
            outcome="failed",
        ),
    ),
    (
        "a user name with spaces",
        "Failed password for invalid user john smith from 10.0.0.1 port 5555 ssh2",
        event(
            user="john smith",
            source="10.0.0.1",
            port=5555,
            method="password",
            keyId="",
            serial="",
            outcome="failed",
        ),
    ),
    (
        "ambiguous: a user name faking a certificate tail is dropped, not misread",
        "Failed publickey for invalid user x from 6.6.6.6 port 1 ssh2: ED25519-CERT SHA256:a ID k"
        " from 10.0.0.1 port 5555 ssh2: " + CERT.format(id="evil", serial=2),
        None,
    ),
    (
        "a user name faking a plain-key tail: only one reading fits",
        "Failed publickey for invalid user x from 6.6.6.6 port 1 ssh2: ED25519 SHA256:abc"
        " from 10.0.0.1 port 5555 ssh2: ED25519 SHA256:zz",
        event(
            user="x from 6.6.6.6 port 1 ssh2: ED25519 SHA256:abc"[:32],
            source="10.0.0.1",
            port=5555,
            keyId="",
            serial="",
            outcome="failed",
        ),
    ),
    (
        "Postponed is not a login",
        "Postponed publickey for root from 127.0.0.1 port 40024 ssh2 [preauth]",
        None,
    ),
    (
        "the CA line is not a login",
        'Accepted certificate ID "kubepam:team-a/req-1:alice" (serial 123) signed by ED25519 CA SHA256:x '
        "via /etc/ssh/kubepam/trusted_user_ca_keys.pub",
        None,
    ),
    (
        "another program's line",
        "Nov 22 10:00:00 host sudo[1]: Accepted publickey for alice from 1.2.3.4 port 1 ssh2",
        None,
    ),
    ("a port out of range", "Failed password for bob from 10.0.0.1 port 99999 ssh2", None),
    ("garbage after ssh2", "Failed password for bob from 10.0.0.1 port 22 ssh2: not a key", None),
    ("empty", "", None),
    ("very long line", "Failed password for " + "a" * 10000 + " from 10.0.0.1 port 22 ssh2", None),
]


@pytest.mark.parametrize(("line", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse(line: str, expected) -> None:
    assert parse_line(line, NOW) == expected


def test_bsd_syslog_time_is_local_time_of_this_year() -> None:
    local_now = NOW.astimezone()
    stamp = local_now.strftime("%b %d %H:%M:%S")
    got = parse_line(f"{stamp} host sshd[123]: {ACCEPTED}", NOW)
    assert got == event()


def test_bsd_syslog_december_line_read_in_january_is_last_year() -> None:
    january = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    got = parse_line("Dec 31 23:00:00 host sshd[1]: " + ACCEPTED, january)
    assert got is not None
    assert got["time"].startswith("2026-12-3") or got["time"].startswith("2027-01-01")


def test_fields_are_bounded() -> None:
    long_id = "kubepam:" + "n" * 400
    got = parse_line(f"Failed password for invalid user {'u' * 90} from 10.0.0.1 port 22 ssh2", NOW)
    assert got is not None and len(got["user"]) == 32
    got = parse_line(
        "Accepted publickey for alice from 127.0.0.1 port 50022 ssh2: " + CERT.format(id=long_id, serial=1),
        NOW,
    )
    assert got is not None and len(got["keyId"]) == 256
    # sshd prints at most 100 characters of a user name: a longer "user" is not a reading of the line
    assert parse_line(f"Failed password for {'u' * 101} from 10.0.0.1 port 22 ssh2", NOW) is None


def test_control_characters_stay_escaped() -> None:
    """sshd escapes newlines in what it logs (strnvis), so one line is one login; the parser keeps the
    escaped text as it is."""
    got = parse_line("Failed password for invalid user a\\012b from 10.0.0.1 port 22 ssh2", NOW)
    assert got is not None and got["user"] == "a\\012b"
