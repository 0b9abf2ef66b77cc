"""The console's pages and actions. Each handler reads the session, makes its Kubernetes calls with the
person's own token (so RBAC and the admission policies decide, as for kubectl), and renders a Jinja2
template; an action answers with a redirect and a one-time notice. A page or button a person may not
use is not offered, and if forced, the API server refuses it and the refusal is shown verbatim."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from kubepam.client.broker import exchange_fields, render_report
from kubepam.console.kube import Kube, KubeError, Person
from kubepam.console.oidc import OidcClient, OidcError, Pending
from kubepam.console.security import RateLimit
from kubepam.console.sessions import COOKIE, LOGIN_COOKIE, OIDC_COOKIE, Sealer, Session
from kubepam.domain import history as hist
from kubepam.domain import verdicts
from kubepam.domain.approvals import State, rule_for, votes_of, would_count
from kubepam.domain.checkout import FINAL, CheckoutPolicySpec, object_name
from kubepam.domain.durations import format_duration, parse_duration
from kubepam.domain.jit import ADMIN_GROUPS
from kubepam.domain.policy import Capability, Request, Subject, evaluate

log = logging.getLogger("kubepam.console")

FLASH = "kubepam_flash"
DURATIONS = ("5m", "10m", "15m", "20m", "30m", "45m", "1h", "2h", "4h", "8h", "12h", "24h")
REVEALABLE = {"checkouts": "Checkout", "jitaccounts": "JitAccount"}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass
class Console:
    kube: Kube
    sealer: Sealer
    templates: jinja2.Environment
    limiter: RateLimit
    broker: str
    secure_cookies: bool
    clock: Callable[[], datetime]
    oidc: OidcClient | None = None


CONSOLE = web.AppKey("console", Console)


# -- plumbing ---------------------------------------------------------------------------------------


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def _cookie(console: Console, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=console.secure_cookies,
    )


def session_of(request: web.Request) -> Session:
    session = _console(request).sealer.session(request.cookies.get(COOKIE))
    if session is None:
        raise web.HTTPSeeOther("/login")
    return session


async def posted(
    request: web.Request, session: Session
) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """A POST's body, after its CSRF token matched the session's."""
    data = await request.post()
    csrf = data.get("csrf", "")
    if not isinstance(csrf, str) or not session.valid_csrf(csrf):
        raise web.HTTPForbidden(
            text="the form's CSRF token is missing or wrong: reload the page and try again"
        )
    return data


async def form_of(request: web.Request, session: Session) -> Mapping[str, str]:
    """A POST's single-valued text fields, after the CSRF check."""
    return {k: v for k, v in (await posted(request, session)).items() if isinstance(v, str)}


def _name(value: str, what: str) -> str:
    if not _NAME.match(value or ""):
        raise web.HTTPBadRequest(text=f"{what}: not a valid Kubernetes name")
    return value


def _target(request: web.Request, what: str) -> tuple[str, str]:
    """The namespace and name an action's path names, each a valid Kubernetes name."""
    return _name(request.match_info["ns"], "namespace"), _name(request.match_info["name"], what)


def back(console: Console, location: str, message: str, level: str = "ok") -> web.HTTPSeeOther:
    response = web.HTTPSeeOther(location)
    _cookie(console, response, FLASH, console.sealer.seal({"m": message[:600], "l": level}), 60)
    return response


async def render(
    request: web.Request,
    session: Session | None,
    template: str,
    caps: dict[str, bool] | None = None,
    **ctx: Any,
) -> web.Response:
    """A page; `caps` when the handler already asked the API server what the person may do."""
    console = _console(request)
    flash = console.sealer.open(request.cookies.get(FLASH)) if session is not None else None
    if caps is None:
        caps = await capabilities(console, session) if session is not None else {}
    html = console.templates.get_template(template).render(
        me=session, caps=caps, flash=flash, now=console.clock(), path=request.path, **ctx
    )
    response = web.Response(text=html, content_type="text/html")
    if flash is not None:
        response.del_cookie(FLASH, path="/")
    return response


async def capabilities(console: Console, session: Session) -> dict[str, bool]:
    """Which pages and buttons to offer: the API server's own answers (SelfSubjectAccessReview)."""
    token = session.token
    approve, patch_checkouts, promote = await asyncio.gather(
        console.kube.can(token, "patch", "checkouts", subresource="status"),
        console.kube.can(token, "patch", "checkouts"),
        console.kube.can(token, "patch", "workloadconnections", subresource="status"),
    )
    admin = bool(set(session.groups) & ADMIN_GROUPS)
    return {"approve": approve, "force": admin and patch_checkouts, "promote": promote}


def guarded(
    fn: Callable[[web.Request, Session], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Every page and action: a session first; a revoked or expired token ends it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        try:
            return await fn(request, session)
        except KubeError as exc:
            if exc.status == 401:
                response = web.HTTPSeeOther("/login")
                response.del_cookie(COOKIE, path="/")
                raise response from None
            if request.method == "POST":
                raise back(_console(request), home_of(request.path), exc.message, "error") from None
            return await render(request, session, "error.html", status=exc.status, message=exc.message)

    return handler


def home_of(path: str) -> str:
    """The page an action belongs to (where its outcome is shown); never a location from the request."""
    first = path.strip("/").split("/", 1)[0]
    return (
        f"/{first}" if first in ("approvals", "accounts", "connections", "request", "history") else "/access"
    )


def _mine(obj: Mapping[str, Any], who: str, field: str) -> bool:
    return (obj.get("spec") or {}).get(field) == who


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _by_ns(objs: list[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    return [o for o in objs if (o.get("metadata") or {}).get("namespace") == ns]


def _project(projects: list[dict[str, Any]], ns: str, name: str) -> dict[str, Any] | None:
    return next((p for p in projects if _key(p) == (ns, name)), None)


@dataclass
class World:
    """What the person can read of kubepam, in one round of concurrent calls."""

    projects: list[dict[str, Any]]
    checkout_policies: list[dict[str, Any]]
    access: list[dict[str, Any]]
    checkouts: list[dict[str, Any]]
    jit: list[dict[str, Any]]


async def world(console: Console, token: str) -> World:
    lists = await asyncio.gather(
        *(
            console.kube.list_or_empty(token, plural)
            for plural in ("projects", "checkoutpolicies", "accesspolicies", "checkouts", "jitaccounts")
        )
    )
    return World(*lists)


def checkout_verdict(
    w: World, person: Person, ns: str, project: str, account: str, **kw: Any
) -> verdicts.Verdict:
    return verdicts.checkout_verdict(
        namespace=ns,
        project=_project(w.projects, ns, project),
        checkout_policies=_by_ns(w.checkout_policies, ns),
        access=_by_ns(w.access, ns),
        checkouts=w.checkouts,
        username=person.username,
        groups=person.groups,
        account=account,
        **kw,
    )


def person_of(session: Session) -> Person:
    return Person(session.username, frozenset(session.groups))


# -- sign-in ----------------------------------------------------------------------------------------


async def login_page(request: web.Request, message: str = "", status: int = 200) -> web.Response:
    console = _console(request)
    state = console.sealer.open(request.cookies.get(LOGIN_COOKIE)) or {}
    csrf = str(state.get("c") or secrets.token_urlsafe(24))
    if request.query.get("error", "") == "1" and not message:
        message = "The API server did not accept that token."
    response = await render(
        request, None, "login.html", csrf=csrf, message=message, oidc=console.oidc is not None
    )
    response.set_status(status)
    _cookie(console, response, LOGIN_COOKIE, console.sealer.seal({"c": csrf}), 600)
    return response


def _start_session(
    console: Console, response: web.StreamResponse, token: str, who: Person, max_age: int
) -> None:
    sealed = console.sealer.new_session(token, who.username, tuple(sorted(who.groups)))
    _cookie(console, response, COOKIE, sealed, max(1, min(max_age, int(console.sealer.ttl.total_seconds()))))
    response.del_cookie(LOGIN_COOKIE, path="/")


async def oidc_begin(request: web.Request) -> web.StreamResponse:
    """Send the browser to the identity provider (authorization code + PKCE)."""
    console = _console(request)
    if console.oidc is None:
        raise web.HTTPNotFound(text="OIDC sign-in is not configured")
    try:
        url, pending = await console.oidc.begin()
    except (OidcError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("OIDC sign-in could not start: %s", exc)
        return await login_page(request, f"The identity provider is unreachable: {type(exc).__name__}", 502)
    response = web.HTTPSeeOther(url)
    # Lax, not Strict: it must come back with the provider's cross-site redirect to /login/callback.
    response.set_cookie(
        OIDC_COOKIE,
        console.sealer.seal(pending.as_dict()),
        max_age=600,
        path="/login",
        httponly=True,
        samesite="Lax",
        secure=console.secure_cookies,
    )
    raise response


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    """The provider's redirect back: check state, redeem the code, verify the ID token, ask the API server
    who it is, and start the session."""
    console = _console(request)
    if console.oidc is None:
        raise web.HTTPNotFound(text="OIDC sign-in is not configured")
    remote = request.remote or "unknown"
    if console.limiter.blocked(remote):
        raise web.HTTPTooManyRequests(text="too many failed sign-ins from this address: wait a minute")
    data = console.sealer.open(request.cookies.get(OIDC_COOKIE), ttl=timedelta(minutes=10))
    pending = Pending.from_dict(data) if data else None
    error = request.query.get("error", "")
    try:
        if error:
            raise OidcError(f"the identity provider said: {error[:100]}")
        if pending is None:
            raise OidcError(
                "this sign-in was not started in this browser, or took over 10 minutes: start again"
            )
        id_token, expires = await console.oidc.finish(
            pending, request.query.get("state", ""), request.query.get("code", "")
        )
        who = await console.kube.whoami(id_token)
    except (OidcError, KubeError, aiohttp.ClientError, TimeoutError) as exc:
        console.limiter.failed(remote)
        reason = exc.message if isinstance(exc, KubeError) else str(exc) or type(exc).__name__
        log.info("OIDC sign-in refused from %s: %s", remote, reason)
        response = await login_page(request, f"Sign-in failed: {reason}", 403)
        response.del_cookie(OIDC_COOKIE, path="/login")
        return response
    log.info("%s signed in with OIDC from %s", who.username, remote)
    # A page, not a redirect: the session cookie is SameSite=Strict, and a redirect chain that began at
    # the provider would not carry it; the refresh below is a same-site navigation that does.
    response = await render(request, None, "continue.html")
    _start_session(console, response, id_token, who, expires - int(console.clock().timestamp()))
    response.del_cookie(OIDC_COOKIE, path="/login")
    return response


async def login(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    remote = request.remote or "unknown"
    if console.limiter.blocked(remote):
        raise web.HTTPTooManyRequests(text="too many failed sign-ins from this address: wait a minute")
    state = console.sealer.open(request.cookies.get(LOGIN_COOKIE)) or {}
    data = await request.post()
    submitted, token = str(data.get("csrf", "")), str(data.get("token", "")).strip()
    if not state.get("c") or not hmac.compare_digest(submitted.encode(), str(state["c"]).encode()):
        raise web.HTTPForbidden(text="the sign-in form's CSRF token is missing or wrong: reload the page")
    if not token or len(token) > 8192 or any(c.isspace() for c in token):
        console.limiter.failed(remote)
        raise web.HTTPSeeOther("/login?error=1")
    try:
        who = await console.kube.whoami(token)
    except KubeError as exc:
        log.info("sign-in refused from %s: HTTP %s", remote, exc.status)  # never the token
        if exc.status not in (401, 403):  # not the token's fault: say what is wrong
            return await login_page(request, f"Sign-in failed: {exc.message}", 503)
        console.limiter.failed(remote)
        raise web.HTTPSeeOther("/login?error=1") from None
    log.info("%s signed in from %s", who.username, remote)
    response = web.HTTPSeeOther("/access")
    _start_session(console, response, token, who, int(console.sealer.ttl.total_seconds()))
    raise response


@guarded
async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    await form_of(request, session)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# -- 1. my access -----------------------------------------------------------------------------------


@guarded
async def my_access(request: web.Request, session: Session) -> web.Response:
    console, token, me = _console(request), session.token, session.username
    w, ssh, x509 = await asyncio.gather(
        world(console, token),
        console.kube.list_or_empty(token, "sshcertificaterequests"),
        console.kube.list_or_empty(token, "x509certificaterequests"),
    )
    person = person_of(session)
    checkouts = []
    maxima: dict[tuple[str, str, str], str] = {}  # one verdict per account, however many checkouts
    for obj in w.checkouts:
        status = obj.get("status") or {}
        if not _mine(obj, me, "requester") or status.get("phase") in FINAL:
            continue
        ns, _ = _key(obj)
        spec = obj["spec"]
        key = (ns, str(spec["project"]), str(spec["account"]))
        if key not in maxima:
            maxima[key] = checkout_verdict(
                w, person, *key, duration="", elevate=False, now=console.clock()
            ).maximum
        maximum = parse_duration(maxima[key]) if maxima[key] else None
        current = _span(status.get("grantedAt"), status.get("expiresAt"))
        extend = [  # longer than now, never past the maximum (the operator caps it there too)
            d
            for d in DURATIONS
            if maximum is not None and current is not None and current < parse_duration(d) <= maximum
        ]
        checkouts.append(
            {
                "obj": obj,
                "maximum": maxima[key],
                "extend": extend,
                "waiting": waiting(obj),
                "break_glass": broke_glass(obj),
            }
        )
    jit = [o for o in w.jit if _mine(o, me, "owner")]
    certs = [
        {"kind": kind, "obj": o}
        for kind, objs in (("SSH", ssh), ("X.509", x509))
        for o in objs
        if _mine(o, me, "requester")
    ]
    return await render(request, session, "access.html", checkouts=checkouts, jit=jit, certs=certs)


@guarded
async def checkin(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    await form_of(request, session)
    ns, name = _target(request, "checkout")
    await console.kube.patch(session.token, "checkouts", ns, name, {"spec": {"checkin": {"requested": True}}})
    raise back(console, "/access", f"checkout {ns}/{name}: check-in requested")


@guarded
async def extend(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    fields = await form_of(request, session)
    ns, name = _target(request, "checkout")
    duration = fields.get("duration", "")
    try:
        parse_duration(duration)
    except ValueError as exc:
        raise back(console, "/access", f"duration: {exc}", "error") from None
    await console.kube.patch(session.token, "checkouts", ns, name, {"spec": {"duration": duration}})
    raise back(console, "/access", f"checkout {ns}/{name}: extension to {duration} from its start requested")


@guarded
async def elevate(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    fields = await form_of(request, session)
    ns, name = _target(request, "checkout")
    reason = fields.get("reason", "").strip()
    if len(reason) < 3:
        raise back(console, "/access", "elevation: a reason is required", "error")
    await console.kube.patch(
        session.token, "checkouts", ns, name, {"spec": {"elevation": {"requested": True, "reason": reason}}}
    )
    raise back(console, "/access", f"checkout {ns}/{name}: elevation requested")


@guarded
async def disable_jit(request: web.Request, session: Session) -> web.StreamResponse:
    """End a JIT account's window now (the API server lets only its owner or a security admin)."""
    console = _console(request)
    await form_of(request, session)
    ns, name = _target(request, "JIT account")
    await console.kube.patch(session.token, "jitaccounts", ns, name, {"spec": {"disabled": True}})
    raise back(console, "/access", f"JIT account {ns}/{name}: disable requested")


@guarded
async def reveal(request: web.Request, session: Session) -> web.StreamResponse:
    """A credential, shown once in answer to a click (a POST: never in a URL, never cached)."""
    console = _console(request)
    await form_of(request, session)
    plural = request.match_info["kind"]
    if plural not in REVEALABLE:
        raise web.HTTPNotFound()
    ns, name = _target(request, "name")
    obj = await console.kube.get(session.token, plural, ns, name)
    field = "requester" if plural == "checkouts" else "owner"
    status = obj.get("status") or {}
    if (
        not _mine(obj, session.username, field)
        or status.get("phase") != "Active"
        or not status.get("secretName")
    ):
        raise back(
            console, "/access", f"{REVEALABLE[plural]} {ns}/{name} has no credential for you now", "error"
        )
    secret = await console.kube.secret(session.token, ns, str(status["secretName"]))
    values = {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.get("data") or {}).items()}
    log.info("%s revealed the credential of %s %s/%s", session.username, REVEALABLE[plural], ns, name)
    return await render(request, session, "reveal.html", kind=REVEALABLE[plural], obj=obj, values=values)


# -- 2. request -------------------------------------------------------------------------------------


def _choices(w: World) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    accounts, jit_projects = [], []
    for p in w.projects:
        ns, name = _key(p)
        spec = p.get("spec") or {}
        for a in spec.get("sharedAccounts") or []:
            accounts.append(
                {
                    "value": f"{ns}/{name}/{a.get('name')}",
                    "label": f"{a.get('name')} ({ns}/{name})",
                    "description": str(a.get("description") or ""),
                }
            )
        j = spec.get("jit") or {}
        if j.get("enabled"):
            jit_projects.append(
                {
                    "value": f"{ns}/{name}",
                    "groups": list(j.get("allowedGroups") or []),
                    "max": str(j.get("maxDuration", "8h")),
                }
            )
    return accounts, jit_projects


@guarded
async def request_page(request: web.Request, session: Session) -> web.Response:
    w = await world(_console(request), session.token)
    accounts, jit_projects = _choices(w)
    return await render(
        request,
        session,
        "request.html",
        accounts=accounts,
        jit_projects=jit_projects,
        form={},
        verdict=None,
        server=None,
    )


def _checkout_body(
    session: Session, ns: str, project: str, account: str, fields: Mapping[str, str]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "project": project,
        "account": account,
        "reason": fields.get("reason", "").strip(),
        "requester": session.username,  # stamped by the API server from the caller whatever is sent
    }
    if fields.get("duration"):
        spec["duration"] = fields["duration"].strip()
    if fields.get("elevate"):
        spec["elevation"] = {"requested": True, "reason": fields.get("elevation_reason", "").strip()}
    return {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "Checkout",
        "metadata": {"generateName": f"{account.replace('_', '-')}-", "namespace": ns},
        "spec": spec,
    }


def _split(value: str, parts: int) -> list[str]:
    pieces = value.split("/")
    if len(pieces) != parts or not all(pieces):
        raise web.HTTPBadRequest(text="pick one from the list")
    return pieces


@guarded
async def request_checkout(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    fields = await form_of(request, session)
    ns, project, account = _split(fields.get("target", ""), 3)
    body = _checkout_body(session, _name(ns, "namespace"), project, account, fields)
    if fields.get("action") != "submit":
        w = await world(console, session.token)
        verdict = checkout_verdict(
            w,
            person_of(session),
            ns,
            project,
            account,
            duration=fields.get("duration", ""),
            elevate=bool(fields.get("elevate")),
            now=console.clock(),
        )
        server = await _dry_run(console, session, "checkouts", ns, body)
        accounts, jit_projects = _choices(w)
        policy = verdicts.covering_policy(_by_ns(w.checkout_policies, ns), project, account)
        return await render(
            request,
            session,
            "request.html",
            accounts=accounts,
            jit_projects=jit_projects,
            form=dict(fields, kind="checkout"),
            verdict=verdict,
            server=server,
            approval=approval_note(policy),
        )
    created = await console.kube.create(session.token, "checkouts", ns, body)
    raise back(
        console, "/access", f"checkout {ns}/{created['metadata']['name']} created: see its phase below"
    )


def approval_note(policy: CheckoutPolicySpec | None) -> str:
    """What the Check first verdict says when the CheckoutPolicy makes every checkout wait for approvers."""
    if policy is None or policy.checkout_approval is None:
        return ""
    stages = ", ".join(f"{s.name} ({s.count})" for s in policy.checkout_approval.stages)
    note = f"this checkout needs approval before the account is handed out: {stages}"
    if policy.break_glass.allowed:
        window = format_duration(policy.break_glass.max_duration)
        note += f"; in an emergency, `kubepam checkout --break-glass` (flagged, at most {window})"
    return note


async def _dry_run(
    console: Console, session: Session, plural: str, ns: str, body: Mapping[str, Any], name: str = ""
) -> str:
    """The API server's own verdict (RBAC and admission), persisting nothing."""
    try:
        if name:
            await console.kube.patch(session.token, plural, ns, name, {"spec": body["spec"]}, dry_run=True)
        else:
            await console.kube.create(session.token, plural, ns, body, dry_run=True)
    except KubeError as exc:
        if exc.status == 401:
            raise
        return exc.message
    return ""


@guarded
async def request_jit(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    data = await posted(request, session)
    fields = {k: v for k, v in data.items() if isinstance(v, str)}
    groups = [g for g in data.getall("groups", []) if isinstance(g, str)]
    ns, project = _split(fields.get("project", ""), 2)
    _name(ns, "namespace")
    spec = {
        "project": project,
        "owner": session.username,
        "groups": groups,
        "reason": fields.get("reason", "").strip(),
        "duration": fields.get("duration", "").strip(),
        "disabled": False,
    }
    name = object_name(session.username) if not _NAME.match(session.username) else session.username
    w = await world(console, session.token)
    existing = next((o for o in w.jit if _key(o) == (ns, name)), None)
    body = {
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "JitAccount",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    if fields.get("action") != "submit":
        verdict = verdicts.jit_verdict(
            namespace=ns,
            project=_project(w.projects, ns, project),
            spec=spec,
            username=session.username,
            groups=frozenset(session.groups),
            existing=existing,
        )
        server = await _dry_run(console, session, "jitaccounts", ns, body, name if existing else "")
        accounts, jit_projects = _choices(w)
        return await render(
            request,
            session,
            "request.html",
            accounts=accounts,
            jit_projects=jit_projects,
            form=dict(fields, kind="jit", groups=groups),
            verdict=verdict,
            server=server,
        )
    if existing is not None:
        await console.kube.patch(session.token, "jitaccounts", ns, name, {"spec": spec})
        raise back(console, "/access", f"JIT account {ns}/{name}: re-enable requested")
    await console.kube.create(session.token, "jitaccounts", ns, body)
    raise back(console, "/access", f"JIT account {ns}/{name} requested")


# -- 3. approvals -----------------------------------------------------------------------------------


def _span(start: Any, end: Any) -> timedelta | None:
    try:
        return datetime.fromisoformat(str(end).replace("Z", "+00:00")) - datetime.fromisoformat(
            str(start).replace("Z", "+00:00")
        )
    except ValueError:
        return None


def _age(since: str, now: datetime) -> str:
    try:
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return format_duration(now - start) or "0s"


_REQUEST_ID = re.compile(r"^(checkout|elevation|extension)-[0-9]{1,9}$")


def open_request(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The approval request a checkout waits on now (status.approvalRequest while Pending), if any."""
    request = (obj.get("status") or {}).get("approvalRequest") or {}
    return dict(request) if request.get("state") == State.PENDING.value and request.get("id") else None


def asked(request: Mapping[str, Any]) -> str:
    """What a request asks for, for people: checkout, elevation, extension to 1h."""
    target = str(request.get("target") or "").lower()
    if target == "extension" and request.get("duration"):
        return f"extension to {request['duration']}"
    return target or "approval"


def progress(request: Mapping[str, Any]) -> str:
    """Each stage's approvals so far, as the operator counted them: "security 1/1, leads 0/1"."""
    return ", ".join(
        f"{stage.get('name', '?')} {len(stage.get('approvedBy') or [])}/{stage.get('count', 1)}"
        for stage in request.get("stages") or []
    )


def waiting(obj: Mapping[str, Any]) -> str:
    """While a request is open, "waiting for approval: security 1/1, leads 0/1" ('' otherwise)."""
    request = open_request(obj)
    if request is None:
        return ""
    what = asked(request)
    return ("" if what == "checkout" else f"{what} ") + f"waiting for approval: {progress(request)}"


def broke_glass(obj: Mapping[str, Any]) -> bool:
    """The requester approved their own request with break-glass (status.breakGlass, flagged)."""
    return bool(((obj.get("status") or {}).get("breakGlass") or {}).get("used"))


def _subject(spec: Mapping[str, Any]) -> Subject:
    """Who the AccessPolicies judge, as the operator does (a workload's checkout: its WorkloadRole)."""
    requester = str(spec.get("requester"))
    role = spec.get("workloadRole")
    if requester.startswith("workload:") and role:
        return Subject(requester, frozenset(), role=str(role))
    return Subject(requester, frozenset(spec.get("groups") or []))


def may_decide(
    w: World, session: Session, obj: Mapping[str, Any], request: Mapping[str, Any]
) -> tuple[bool, str]:
    """Would this person's vote on the open request count (the operator's own stages, `would_count`)?"""
    ns, _ = _key(obj)
    spec = obj.get("spec") or {}
    project, account = str(spec.get("project")), str(spec.get("account"))
    policy = verdicts.covering_policy(_by_ns(w.checkout_policies, ns), project, account)
    if policy is None:
        return False, "no CheckoutPolicy covers this account"
    grant = evaluate(
        verdicts.access_policies(_by_ns(w.access, ns)),
        _subject(spec),
        Request(ns, project, Capability.CHECKOUT, account=account),
    ).grant
    rule = rule_for(
        str(request.get("target")),
        policy,
        grant.approver_users if grant else frozenset(),
        grant.approver_groups if grant else frozenset(),
    )
    if rule is None:
        return False, f"the CheckoutPolicy of project {project} asks no approval for this"
    return would_count(
        rule,
        request=str(request.get("id")),
        approver=session.username,
        groups=frozenset(session.groups),
        requester=str(spec.get("requester")),
        votes=votes_of((obj.get("status") or {}).get("approvals")),
    )


@guarded
async def approvals(request: web.Request, session: Session) -> web.Response:
    """Every checkout with an open approval request: a checkout, an elevation or an extension."""
    console = _console(request)
    w = await world(console, session.token)
    caps = await capabilities(console, session)
    now = console.clock()
    rows = []
    for obj in w.checkouts:
        open_ = open_request(obj)
        if open_ is None:
            continue
        decidable, why = (
            may_decide(w, session, obj, open_) if caps["approve"] else (False, "you are not an approver")
        )
        rows.append(
            {
                "obj": obj,
                "request": open_,
                "asked": asked(open_),
                "progress": progress(open_),
                "own": _mine(obj, session.username, "requester"),
                "decidable": decidable,
                "why": why,
                "age": _age(
                    str(open_.get("requestedAt") or obj["metadata"].get("creationTimestamp", "")), now
                ),
            }
        )
    return await render(request, session, "approvals.html", caps=caps, rows=rows)


@guarded
async def decide(request: web.Request, session: Session) -> web.StreamResponse:
    """One vote appended to status.approvals (a JSON patch on the status subresource) on the request the
    person saw: the form carries its id, and if another request is open by now the API server refuses
    the vote ("you can only vote on the open request ..."); it also stamps who voted and their groups."""
    console = _console(request)
    fields = await form_of(request, session)
    ns, name = _target(request, "checkout")
    decision = {"approve": "Approved", "deny": "Denied"}.get(fields.get("decision", ""))
    if decision is None:
        raise web.HTTPBadRequest(text="decision: approve or deny")
    voted_on = fields.get("request", "")
    if not _REQUEST_ID.match(voted_on):
        raise web.HTTPBadRequest(text="request: the id of the open approval request (reload Approvals)")
    vote = {"request": voted_on, "decision": decision, "comment": fields.get("comment", "").strip()}
    await console.kube.json_patch(
        session.token,
        "checkouts",
        ns,
        name,
        [{"op": "add", "path": "/status/approvals/-", "value": vote}],
        subresource="status",
    )
    what = voted_on.rsplit("-", 1)[0]
    raise back(console, "/approvals", f"{what} of {ns}/{name}: {decision.lower()}")


# -- 4. shared accounts -----------------------------------------------------------------------------


@guarded
async def accounts(request: web.Request, session: Session) -> web.Response:
    console = _console(request)
    w = await world(console, session.token)
    rows = []
    for p in sorted(w.projects, key=_key):
        ns, project = _key(p)
        for a in (p.get("spec") or {}).get("sharedAccounts") or []:
            name = str(a.get("name"))
            held = verdicts.holder_of(w.checkouts, ns, project, name)
            mine = [
                o
                for o in w.checkouts
                if _key(o)[0] == ns
                and (o.get("spec") or {}).get("project") == project
                and (o.get("spec") or {}).get("account") == name
            ]
            last = max(mine, key=lambda o: str((o.get("status") or {}).get("grantedAt") or ""), default=None)
            rotation = ((last or {}).get("status") or {}).get("rotation") or {}
            asking = [  # checkouts of this account still waiting for their approvers
                {"requester": str((o.get("spec") or {}).get("requester", "")), "waiting": waiting(o)}
                for o in mine
                if (o.get("status") or {}).get("phase") == "Pending" and open_request(o) is not None
            ]
            rows.append(
                {
                    "ns": ns,
                    "project": project,
                    "name": name,
                    "backend": a.get("backend", "kubernetes"),
                    "description": a.get("description", ""),
                    "held": held,
                    "break_glass": held is not None and broke_glass(held),
                    "waiting": asking,
                    "rotation": rotation,
                }
            )
    return await render(request, session, "accounts.html", rows=rows)


@guarded
async def force_confirm(request: web.Request, session: Session) -> web.Response:
    console = _console(request)
    ns, name = _target(request, "checkout")
    obj = await console.kube.get(session.token, "checkouts", ns, name)
    return await render(request, session, "force.html", obj=obj)


@guarded
async def force(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    fields = await form_of(request, session)
    ns, name = _target(request, "checkout")
    if fields.get("confirm") != name:
        raise back(console, "/accounts", "force check-in not confirmed: type the checkout's name", "error")
    await console.kube.patch(session.token, "checkouts", ns, name, {"spec": {"checkin": {"force": True}}})
    raise back(console, "/accounts", f"checkout {ns}/{name}: forced check-in requested")


# -- 5. history -------------------------------------------------------------------------------------


@guarded
async def history(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    token = session.token
    # AccessRecords (finished things whose objects may be gone) beside the live objects: the same rows
    # as `kubepam history` (domain/history.py); a person RBAC keeps from records sees only live rows.
    checkouts, jit, records = await asyncio.gather(
        console.kube.list_or_empty(token, "checkouts"),
        console.kube.list_or_empty(token, "jitaccounts"),
        console.kube.list_or_empty(token, "accessrecords"),
    )
    kind = request.query.get("kind", "")
    kind = kind if kind in hist.KINDS else ""
    text = request.query.get("q", "")[:200]
    rows = hist.select(hist.history(checkouts, jit, records), kind=kind, text=text)
    fmt = request.query.get("format", "")
    stamp = console.clock().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "json":
        return web.Response(
            text=hist.to_json(rows),
            content_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="kubepam-history-{stamp}.json"'},
        )
    if fmt == "csv":
        return web.Response(
            text=hist.to_csv(rows),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="kubepam-history-{stamp}.csv"'},
        )
    query = f"kind={quote(kind)}&q={quote(text)}"
    return await render(
        request, session, "history.html", rows=rows, kind=kind, q=text, kinds=hist.KINDS, query=query
    )


# -- 6. workload connections ------------------------------------------------------------------------


@guarded
async def connections(request: web.Request, session: Session) -> web.Response:
    console = _console(request)
    items = await console.kube.list_or_empty(session.token, "workloadconnections")
    return await render(
        request, session, "connections.html", items=sorted(items, key=_key), report=None, text=""
    )


@guarded
async def set_phase(request: web.Request, session: Session) -> web.StreamResponse:
    console = _console(request)
    fields = await form_of(request, session)
    ns, name = _target(request, "connection")
    phase = {"promote": "Active", "demote": "Draft"}.get(fields.get("to", ""))
    if phase is None:
        raise web.HTTPBadRequest(text="to: promote or demote")
    status: dict[str, Any] = {"phase": phase}
    if phase == "Active":
        status |= {
            "activatedBy": session.username,
            "activatedAt": console.clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    await console.kube.patch(
        session.token, "workloadconnections", ns, name, {"status": status}, subresource="status"
    )
    raise back(console, "/connections", f"workload connection {ns}/{name} is now {phase}")


@guarded
async def explain(request: web.Request, session: Session) -> web.Response:
    """The broker's explain trace for a pasted token; the token is forwarded, never stored or shown."""
    console = _console(request)
    fields = await form_of(request, session)
    ns, name = _split(fields.get("connection", ""), 2)
    token = fields.get("token", "").strip()
    items = await console.kube.list_or_empty(session.token, "workloadconnections")
    if not any(_key(o) == (ns, name) for o in items):
        raise back(console, "/connections", f"no workload connection {ns}/{name} you can read", "error")
    report: str
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
            http.post(
                console.broker.rstrip("/") + "/v1/token/validate", data=exchange_fields(f"{ns}/{name}", token)
            ) as resp,
        ):
            answer = await resp.json(content_type=None)
            report = (
                render_report(answer) if resp.status < 400 else str(answer.get("error_description") or answer)
            )
    except (aiohttp.ClientError, ValueError, KeyError, TypeError) as exc:
        report = f"the broker at {console.broker} did not answer: {type(exc).__name__}"
    items = sorted(items, key=_key)
    return await render(request, session, "connections.html", items=items, report=report, text=f"{ns}/{name}")


def now_utc() -> datetime:
    return datetime.now(UTC)
