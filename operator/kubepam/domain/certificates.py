"""What goes into a short-lived certificate, decided without keys: validity window, key id, the
OpenSSH extensions a user certificate carries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

BACKDATE = timedelta(seconds=30)  # tolerate clock skew between kubepam and servers
STANDARD_EXTENSIONS = (
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
)


@dataclass(frozen=True)
class Validity:
    after: datetime
    before: datetime


def validity(now: datetime, ttl: timedelta) -> Validity:
    """From 30 s before now (clock skew) to now + ttl."""
    now = now.replace(microsecond=0)
    return Validity(now - BACKDATE, now + ttl)


def key_id(namespace: str, requester: str, request: str) -> str:
    """What sshd logs for each login: who, and which request minted the certificate."""
    return f"kubepam:{namespace}/{request}:{requester}"
