"""Backend pinning: a Secret holding a backend's admin credentials may be sent only to the hosts a
security admin listed on it. The annotation ``kubepam.io/allowed-hosts`` holds comma-separated
``host:port`` entries (``host`` alone means the PostgreSQL port 5432; IPv6 as ``[addr]:port``). Host
names compare case-insensitively and without a trailing dot, addresses in their canonical form.

DevOps admins choose a backend's host and port in a Project but cannot write Secrets, so without the
annotation they could point the operator, holding the real admin password, at a server of their own."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

ALLOWED_HOSTS_ANNOTATION = "kubepam.io/allowed-hosts"
DEFAULT_PORT = 5432


@dataclass(frozen=True, order=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def normalise_host(host: str) -> str:
    """Lower case, no surrounding brackets or trailing dot; IP addresses in canonical form."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.rstrip(".")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def endpoint(host: str, port: int | str | None = None) -> Endpoint:
    """The endpoint a spec asks for (port defaults to 5432)."""
    return Endpoint(normalise_host(host), int(port) if port not in (None, "") else DEFAULT_PORT)


def parse_entry(entry: str) -> Endpoint | None:
    """One ``host[:port]`` entry of the annotation; ``None`` if it is not one."""
    text = entry.strip()
    if not text:
        return None
    host, port = text, None
    if text.startswith("["):  # [v6]:port or [v6]
        close = text.find("]")
        if close < 0:
            return None
        host, rest = text[: close + 1], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    # more than one colon and no brackets: a bare IPv6 address, whose port cannot be told apart
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        return None
    name = normalise_host(host)
    if not name or any(c.isspace() or c in "/@?#," for c in name):
        return None
    return Endpoint(name, int(port) if port else DEFAULT_PORT)


def allowed_endpoints(annotations: Mapping[str, str]) -> frozenset[Endpoint] | None:
    """The endpoints the annotation allows; ``None`` when the annotation is absent."""
    value = annotations.get(ALLOWED_HOSTS_ANNOTATION)
    if value is None:
        return None
    found = (parse_entry(part) for part in value.split(","))
    return frozenset(e for e in found if e is not None)


def pinning_problem(secret: str, annotations: Mapping[str, str], host: str, port: int | str | None) -> str:
    """Why the Secret named ``secret`` (namespace/name) may not be sent to host:port; "" if it may."""
    wanted = endpoint(host, port)
    allowed = allowed_endpoints(annotations)
    if allowed is None:
        return (
            f"admin Secret {secret} has no annotation {ALLOWED_HOSTS_ANNOTATION}: a security admin must "
            f"list the host:port entries it may be sent to; refusing to use it for {wanted}"
        )
    if wanted not in allowed:
        return (
            f"host {wanted} is not allowed for admin Secret {secret}: it is not listed in its annotation "
            f"{ALLOWED_HOSTS_ANNOTATION} (a security admin sets it); no connection was attempted"
        )
    return ""
