"""The broker's side of `kubepam agent` (docs/agent-protocol.md): the agent's client certificate
(issued at enrollment, renewed later), signed-request verification, the server's desired local
accounts (long poll), login events, and the heartbeat.

A signed request is accepted only when its certificate chains to a current or retiring X.509 CA of the
project of the Server its URI SAN names, that Server's ``status.agent.keyFingerprint`` is the
certificate key's, the JWT verifies with that key, ``htm``/``htu`` are this request's, ``iat`` is
within 60 s of the broker's clock, ``exp`` is not past (and at most 60 s after ``iat``), and ``jti``
was not seen in the last 120 s on this replica. The server is **self**: the routes act only on the
certificate's server. Tokens are never logged or quoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from kubepam.adapters.agent_auth import (
    AgentAuthError,
    agent_uri,
    check_chain,
    describe_certificate,
    parse_token,
    verified_claims,
)
from kubepam.adapters.ca import CertificateError, random_serial, sign_client_csr
from kubepam.adapters.kube import KubeError
from kubepam.domain import oauth
from kubepam.domain.certificates import validity
from kubepam.domain.conditions import rfc3339
from kubepam.domain.kinds import API_VERSION
from kubepam.domain.plans import Plan, agent_silent_at, plan_server, status_patch
from kubepam.domain.policy import Policy
from kubepam.domain.server_access import IssuedLogin, ServerFacts, access_document, desired_access
from kubepam.domain.text import clip
from kubepam.services.projects import CAStore

log = logging.getLogger("kubepam.agents")

SCHEME = "KubepamAgent"
MAX_SKEW = timedelta(seconds=60)
MAX_LIFETIME = 60  # seconds from iat to exp
REPLAY_WINDOW = timedelta(seconds=120)
MAX_REPLAY_ENTRIES = 100_000
HEARTBEAT_EVERY = timedelta(seconds=30)
MAX_WAIT = 55
RECHECK = 10.0  # seconds: re-evaluate a held long poll at least this often (certificate expiries)
MAX_EVENTS = 100
MAX_CSR = 16 * 1024
_JTI = re.compile(r"^[0-9a-f]{32}$")
_VERSION = re.compile(r"^kubepam-agent/([0-9A-Za-z.+_-]{1,64})(\s|$)")
_KEY_ID = re.compile(r"^kubepam:([^/]+)/([^:]+):(.+)$")


@dataclass(frozen=True)
class ServerRecord:
    """What the broker's index keeps of a Server for its agent."""

    namespace: str
    name: str
    uid: str
    project: str
    labels: Mapping[str, str] = field(default_factory=dict)
    fingerprint: str = ""  # status.agent.keyFingerprint


class AgentDirectory(Protocol):
    def server_record(self, namespace: str, name: str) -> ServerRecord | None: ...
    def policies(self, namespace: str) -> Sequence[Policy]: ...
    def issued_logins(self, namespace: str, server: str) -> Sequence[IssuedLogin]: ...


class StatusObjects(Protocol):
    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...


class EventSink(Protocol):
    async def emit(
        self,
        obj: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        audit: Mapping[str, Any] | None = None,
    ) -> None: ...


class Changes:
    """Version numbers of what a server's desired state reads, by scope: ``namespace_scope(ns)`` for its
    namespace's AccessPolicies, ``server_scope(ns, name)`` for the Server and the certificates issued for
    it. kopf event handlers of the VIEW registry :meth:`bump` them (kopf updates its indexes before it
    runs event handlers); a held long poll wakes at the next bump of its own scopes only, so one server's
    heartbeat never wakes the others."""

    def __init__(self) -> None:
        self._versions: dict[Hashable, int] = {}
        self._waiters: dict[Hashable, set[asyncio.Event]] = {}

    def versions(self, scopes: Sequence[Hashable]) -> tuple[int, ...]:
        return tuple(self._versions.get(scope, 0) for scope in scopes)

    def bump(self, scope: Hashable) -> None:
        self._versions[scope] = self._versions.get(scope, 0) + 1
        for event in self._waiters.pop(scope, ()):
            event.set()

    async def wait(self, scopes: Sequence[Hashable], since: tuple[int, ...], seconds: float) -> None:
        """Return at the next bump of one of ``scopes`` after versions ``since``, or after ``seconds``."""
        if self.versions(scopes) != since or seconds <= 0:
            return
        event = asyncio.Event()
        for scope in scopes:
            self._waiters.setdefault(scope, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
        finally:
            for scope in scopes:
                waiting = self._waiters.get(scope)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[scope]


def namespace_scope(namespace: str) -> Hashable:
    return ("namespace", namespace)


def server_scope(namespace: str, name: str) -> Hashable:
    return ("server", namespace, name)


CHANGES = Changes()


class ReplayCache:
    """jti values seen in the last ``window`` on this replica, at most ``limit`` of them."""

    def __init__(self, window: timedelta = REPLAY_WINDOW, limit: int = MAX_REPLAY_ENTRIES) -> None:
        self._window = window
        self._limit = limit
        self._seen: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now: datetime) -> None:
        while self._seen:
            jti, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[jti]

    def claim(self, jti: str, now: datetime) -> None:
        self._purge(now)
        if jti in self._seen:
            raise oauth.invalid_token("the agent token's jti was already used", "replayed_jti")
        if len(self._seen) >= self._limit:
            raise oauth.temporarily_unavailable("too many agent requests; try again shortly", "replay_full")
        self._seen[jti] = now + self._window


@dataclass(frozen=True)
class AgentIdentity:
    """A verified agent: its server (self) and the certificate it signed with."""

    server: ServerRecord
    fingerprint: str
    serial: int
    retiring_ca: bool = False  # signed by a CA the project is rotating away from


def _invalid(reason: str, message: str) -> oauth.OAuthError:
    return oauth.invalid_token(message, reason)


def _text(value: Any, field_name: str, limit: int, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise oauth.invalid_request(f"{field_name} must be a string of at most {limit} characters")
    return value


def _time(value: Any, field_name: str) -> datetime:
    text = _text(value, field_name, 64)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise oauth.invalid_request(f"{field_name} must be an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise oauth.invalid_request(f"{field_name} must carry a time zone (RFC 3339)")
    return moment.astimezone(UTC)


def person_of(key_id: str) -> str:
    """The person a kubepam certificate's key id names (``kubepam:<ns>/<request>:<person>``)."""
    found = _KEY_ID.match(key_id)
    return found.group(3) if found else ""


@dataclass(frozen=True)
class Login:
    time: datetime
    user: str
    source: str
    port: int | None
    method: str
    key_id: str
    serial: str
    outcome: str

    @property
    def person(self) -> str:
        return person_of(self.key_id)


def parse_events(body: Mapping[str, Any]) -> list[Login]:
    events = body.get("events")
    if not isinstance(events, list):
        raise oauth.invalid_request("events must be a list")
    if len(events) > MAX_EVENTS:
        raise oauth.invalid_request(f"at most {MAX_EVENTS} events per batch")
    out = []
    for i, raw in enumerate(events):
        at = f"events[{i}]"
        if not isinstance(raw, dict):
            raise oauth.invalid_request(f"{at} must be an object")
        port = raw.get("port")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise oauth.invalid_request(f"{at}.port must be a port number")
        outcome = raw.get("outcome", "accepted")
        if outcome not in ("accepted", "failed"):
            raise oauth.invalid_request(f"{at}.outcome must be accepted or failed")
        serial = raw.get("serial")
        if isinstance(serial, int) and not isinstance(serial, bool):
            serial = str(serial)
        out.append(
            Login(
                time=_time(raw.get("time"), f"{at}.time"),
                user=_text(raw.get("user"), f"{at}.user", 32),
                source=_text(raw.get("source"), f"{at}.source", 64),
                port=port,
                method=_text(raw.get("method"), f"{at}.method", 64, required=False),
                key_id=_text(raw.get("keyId"), f"{at}.keyId", 256, required=False),
                serial=_text(serial, f"{at}.serial", 32, required=False),
                outcome=str(outcome),
            )
        )
    return out


def agent_version(user_agent: str | None) -> str:
    found = _VERSION.match(user_agent or "")
    return found.group(1) if found else ""


class AgentService:
    def __init__(
        self,
        directory: AgentDirectory,
        cas: CAStore,
        objects: StatusObjects,
        events: EventSink,
        clock: Callable[[], datetime],
        cert_ttl: timedelta = timedelta(hours=24),
        changes: Changes = CHANGES,
        replay: ReplayCache | None = None,
        recheck: float = RECHECK,
    ) -> None:
        self._directory = directory
        self._cas = cas
        self._objects = objects
        self._events = events
        self._clock = clock
        self._ttl = cert_ttl
        self._changes = changes
        self._replay = replay or ReplayCache()
        self._recheck = recheck
        # Keys this replica wrote, until its index shows them: a re-keyed server's old key stops at once.
        self._pins: dict[tuple[str, str], str] = {}
        self._heartbeats: dict[tuple[str, str], tuple[datetime, str]] = {}

    # -- certificates ---------------------------------------------------------------------------------

    def issue(
        self, namespace: str, project: str, server: str, csr: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The agent's client certificate from the project's current CA: (the answer, status.agent fields)."""
        if not isinstance(csr, str) or not csr or len(csr) > MAX_CSR:
            raise oauth.invalid_request(f"csr must be a PEM certificate signing request (at most {MAX_CSR})")
        ca = self._cas.current(namespace, project)
        if ca is None:
            raise oauth.temporarily_unavailable(f"the CA of project {namespace}/{project} is not ready yet")
        now = self._clock()
        valid = validity(now, self._ttl)
        try:
            pem = sign_client_csr(ca, csr, server, agent_uri(namespace, server), valid, random_serial())
        except CertificateError as exc:
            raise oauth.invalid_request(str(exc).replace("spec.csr", "csr")) from None
        issued = describe_certificate(pem)
        renew_after = now.replace(microsecond=0) + self._ttl * 2 / 3
        answer = {
            "certificate": pem,
            "caCertificates": self._cas.ca_bundle(namespace, project),
            "expiresAt": rfc3339(issued.not_after),
            "renewAfter": rfc3339(renew_after),
        }
        status = {
            "keyFingerprint": issued.fingerprint,
            "certificateSerial": str(issued.serial),
            "certificateExpiresAt": rfc3339(issued.not_after),
        }
        return answer, status

    def pin(self, namespace: str, name: str, fingerprint: str) -> None:
        self._pins[(namespace, name)] = fingerprint

    async def renew(self, identity: AgentIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        server = identity.server
        answer, fields = self.issue(server.namespace, server.project, server.name, body.get("csr"))
        await self._objects.patch_status("servers", server.namespace, server.name, {"agent": fields})
        self.pin(server.namespace, server.name, fields["keyFingerprint"])
        log.info(
            "renewed the agent certificate of %s/%s (serial %s%s)",
            server.namespace,
            server.name,
            fields["certificateSerial"],
            ", new key" if fields["keyFingerprint"] != identity.fingerprint else "",
        )
        return answer

    # -- signed requests ------------------------------------------------------------------------------

    def _expected_key(self, namespace: str, name: str, record: ServerRecord | None) -> str:
        key = (namespace, name)
        pinned = self._pins.get(key)
        if pinned is not None and record is not None and record.fingerprint == pinned:
            del self._pins[key]  # the index caught up
        if record is None:
            self._pins.pop(key, None)
            return ""
        return pinned or record.fingerprint

    def authenticate(self, authorization: str | None, method: str, target: str) -> AgentIdentity:
        """Verify ``Authorization: KubepamAgent <JWT>`` for this request (method and path with query)."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme != SCHEME or not token:
            raise _invalid("missing_agent_token", f"use Authorization: {SCHEME} <signed JWT>")
        now = self._clock()
        try:
            presented = parse_token(token)
            record = self._directory.server_record(presented.namespace, presented.server)
            if record is None:
                raise AgentAuthError(
                    "unknown_server", f"no Server {presented.namespace}/{clip(presented.server)}"
                )
            issuer = check_chain(
                presented, [ca.x509_cert for ca in self._cas.trusted(record.namespace, record.project)], now
            )
            expected = self._expected_key(record.namespace, record.name, record)
            if not expected or expected != presented.fingerprint:
                raise AgentAuthError(
                    "key_not_enrolled", "the certificate's key is not the one enrolled for this server"
                )
            claims = verified_claims(presented)
        except AgentAuthError as exc:
            raise _invalid(exc.reason, exc.message) from None
        self._check_claims(claims, method, target, now)
        self._replay.claim(str(claims["jti"]), now)
        current = self._cas.current(record.namespace, record.project)
        retiring = current is None or current.x509_cert != issuer  # the CA rotated: renew in the overlap
        return AgentIdentity(record, presented.fingerprint, presented.serial, retiring)

    def _check_claims(self, claims: Mapping[str, Any], method: str, target: str, now: datetime) -> None:
        if claims.get("htm") != method.upper():
            raise _invalid("wrong_htm", "the token's htm is not this request's method")
        if claims.get("htu") != target:
            raise _invalid("wrong_htu", "the token's htu is not this request's path and query")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
            raise _invalid("malformed_token", "iat and exp must be integers (seconds)")
        assert isinstance(iat, int) and isinstance(exp, int)
        stamp = now.timestamp()
        if abs(stamp - iat) > MAX_SKEW.total_seconds():
            raise _invalid("stale_token", "the token's iat is not within 60 s of the broker's clock")
        if exp < stamp:
            raise _invalid("expired_token", "the token has expired")
        if exp - iat > MAX_LIFETIME or exp < iat:
            raise _invalid("token_lifetime", "exp must be at most 60 s after iat")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not _JTI.match(jti):
            raise _invalid("bad_jti", "jti must be 16 random bytes in lower-case hex")

    # -- desired state --------------------------------------------------------------------------------

    def _current(self, identity: AgentIdentity) -> ServerRecord:
        """The identity's server as the index has it now (a held poll ends when it goes or is re-keyed)."""
        old = identity.server
        record = self._directory.server_record(old.namespace, old.name)
        if (
            record is None
            or record.uid != old.uid
            or self._expected_key(old.namespace, old.name, record) != identity.fingerprint
        ):
            raise _invalid("key_not_enrolled", "the server was deleted or enrolled another key")
        return record

    def document(self, identity: AgentIdentity) -> tuple[dict[str, Any], str]:
        record = self._current(identity)
        now = self._clock()
        facts = ServerFacts(record.namespace, record.name, record.project, record.labels)
        desired = desired_access(
            facts,
            self._directory.policies(record.namespace),
            self._directory.issued_logins(record.namespace, record.name),
            now,
        )
        body, etag = access_document(
            facts, self._cas.trusted_user_ca_keys(record.namespace, record.project), desired
        )
        if identity.retiring_ca:
            # The project's CA rotated: the agent renews now, while the old CA is still trusted (the
            # ETag differs, so a held poll or a 304 never hides it).
            body, etag = {**body, "renewCertificate": True}, etag + "-renew"
        return {**body, "generatedAt": rfc3339(now)}, etag

    async def access(
        self, identity: AgentIdentity, if_none_match: str | None, wait: float, user_agent: str | None
    ) -> tuple[dict[str, Any] | None, str]:
        """The desired state and its ETag; None (304) when ``if_none_match`` still holds after ``wait``."""
        await self.heartbeat(identity, user_agent)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(float(wait), MAX_WAIT))
        server = identity.server
        scopes = (namespace_scope(server.namespace), server_scope(server.namespace, server.name))
        while True:
            versions = self._changes.versions(scopes)
            body, etag = self.document(identity)
            remaining = deadline - loop.time()
            if if_none_match != etag:
                return body, etag
            if remaining <= 0:
                return None, etag
            await self._changes.wait(scopes, versions, min(remaining, self._recheck))

    async def heartbeat(self, identity: AgentIdentity, user_agent: str | None) -> None:
        server = identity.server
        key = (server.namespace, server.name)
        now = self._clock()
        version = agent_version(user_agent)
        last = self._heartbeats.get(key)
        if last is not None and now - last[0] < HEARTBEAT_EVERY and last[1] == version:
            return
        self._heartbeats[key] = (now, version)
        fields: dict[str, Any] = {"lastSeen": rfc3339(now)}
        if version:
            fields["version"] = version
        try:
            await self._objects.patch_status("servers", server.namespace, server.name, {"agent": fields})
        except KubeError as exc:  # a missed heartbeat must not fail the agent's request
            log.warning("could not record the heartbeat of %s/%s: %s", server.namespace, server.name, exc)

    # -- login events ---------------------------------------------------------------------------------

    async def record_events(self, identity: AgentIdentity, body: Mapping[str, Any]) -> int:
        logins = parse_events(body)
        server = identity.server
        obj = {
            "apiVersion": API_VERSION,
            "kind": "Server",
            "metadata": {"name": server.name, "namespace": server.namespace, "uid": server.uid},
        }
        for login in logins:
            person = login.person or "someone without a kubepam certificate"
            accepted = login.outcome == "accepted"
            verb = "logged in" if accepted else "failed to log in"
            await self._events.emit(
                obj,
                "Login" if accepted else "LoginFailed",
                f"{person} {verb} as {login.user} from {login.source}"
                + (f" (key id {login.key_id})" if login.key_id else ""),
                warning=not accepted,
                audit={
                    "actor": login.person,
                    "user": login.user,
                    "source": login.source,
                    "port": login.port,
                    "method": login.method,
                    "keyId": login.key_id,
                    "serial": login.serial,
                    "outcome": login.outcome,
                    "loginTime": rfc3339(login.time),
                },
            )
        logged_in = [login for login in logins if login.outcome == "accepted"]
        if logged_in:
            last = max(logged_in, key=lambda login: login.time)
            await self._objects.patch_status(
                "servers",
                server.namespace,
                server.name,
                {
                    "agent": {
                        "lastLogin": {
                            "time": rfc3339(last.time),
                            "user": last.user,
                            "person": last.person,
                            "source": last.source,
                            "keyId": last.key_id,
                        }
                    }
                },
            )
        return len(logins)


class ServerObjects(StatusObjects, Protocol):
    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...


class Deadlines(Protocol):
    def schedule(self, key: Hashable, when: datetime, action: Callable[[], Awaitable[None]]) -> None: ...
    def cancel(self, key: Hashable) -> None: ...


class ServerHealth:
    """The Server's Ready condition with its agent: False (AgentSilent) once an enrolled agent's
    ``lastSeen`` is older than ``silent_after``, at that deadline in the operator's one scheduler, and
    True again when it reports."""

    def __init__(
        self,
        objects: ServerObjects,
        scheduler: Deadlines,
        clock: Callable[[], datetime],
        silent_after: timedelta,
    ) -> None:
        self._objects = objects
        self._scheduler = scheduler
        self._clock = clock
        self._silent_after = silent_after

    def plan(self, obj: Mapping[str, Any]) -> Plan:
        meta = obj.get("metadata") or {}
        return plan_server(
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            obj.get("spec") or {},
            obj.get("status"),
            self._clock(),
            self._silent_after,
        )

    async def observe(self, obj: Mapping[str, Any]) -> None:
        """Write the Server's health if it changed, and arm the deadline at which its agent goes silent."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        status = obj.get("status") or {}
        if not (status.get("agent") or {}).get("keyFingerprint"):
            self._scheduler.cancel(("agent-silent", namespace, name))
            return
        generation = int(meta.get("generation") or 0)
        desired = status_patch(self.plan(obj), status, generation, self._clock())
        if desired is not None:
            await self._objects.patch_status("servers", namespace, name, desired)
        self.arm(namespace, name, status)

    def arm(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        key = ("agent-silent", namespace, name)
        when = agent_silent_at(status, self._silent_after)
        if when is None or when <= self._clock():
            self._scheduler.cancel(key)
            return

        async def check() -> None:
            obj = await self._objects.get("servers", namespace, name)
            if obj is not None:
                await self.observe(obj)

        self._scheduler.schedule(key, when, check)

    def forget(self, namespace: str, name: str) -> None:
        self._scheduler.cancel(("agent-silent", namespace, name))
