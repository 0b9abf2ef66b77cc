"""The broker's HTTP routes (aiohttp), served by the operator process. Thin: parse the request,
call a service, shape the answer. Errors are RFC 6749 JSON bodies; no stack trace, no token text.

Nothing a caller sends is a server error: bodies are read with bounded size (72 KiB, room for a 64 KiB
subject token), forms with at most 1,000 fields, JSON strictly (UTF-8, no lone surrogates, nesting
at most 32 deep, checked before parsing), and every failure is a 4xx naming the rule, logged below
ERROR (an ERROR line means kubepam itself is broken).

    POST /v1/token            RFC 8693 token exchange
    POST /v1/token/validate   dry run with a claim-by-claim trace (Draft or Active connections)
    POST /v1/ssh/sign         Bearer kubepam access token + role/project/server/publicKey -> certificate
    POST /v1/enroll           a server trades its project's enrollment token for a Server and the CA keys
                              (with "csr": its agent's client certificate; 409 once an agent enrolled)
    POST /v1/servers/self/certificate   signed agent request (KubepamAgent JWT): renew, maybe a new key
    GET  /v1/servers/self/access        signed: the server's local accounts, ETag; ?wait=0..55 long poll
    POST /v1/servers/self/events        signed: login events -> Events, audit lines, status.agent.lastLogin
    POST   /v1/checkouts      Bearer + role/project/account/reason[/duration] -> a Checkout and its credential
                              (201, returned this once); 403 Denied naming the holder; 503 while not decided
    GET    /v1/checkouts/{namespace}/{name}             its status (never the credential)
    POST   /v1/checkouts/{namespace}/{name}/credential  the credential of one decided late (approvers), once
    DELETE /v1/checkouts/{namespace}/{name}             check it in (202); only the token's own checkouts
                              (spec.requester == the token's sub), any other is 404 as a missing one
    GET  /.well-known/jwks.json   keys that sign kubepam access tokens
    GET  /healthz, /readyz, /metrics
"""

from __future__ import annotations

import logging
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kubepam.adapters import metrics
from kubepam.domain import oauth, strict_json
from kubepam.domain.oauth import OAuthError
from kubepam.domain.text import clip
from kubepam.services.workload_checkouts import NotSettled

if TYPE_CHECKING:
    from kubepam.handlers.runtime import Runtime

log = logging.getLogger("kubepam.broker")
MAX_BODY = 72 * 1024  # a 64 KiB subject token and the other RFC 8693 parameters
MAX_FORM_FIELDS = 1000
MAX_JSON_DEPTH = 32
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(err: OAuthError) -> web.Response:
    headers = dict(NO_STORE)
    if err.status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{err.error}"'
    return web.json_response(err.body(), status=err.status, headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OAuthError as err:
        return error_response(err)
    except web.HTTPRequestEntityTooLarge:
        return error_response(oauth.invalid_request(f"request body larger than {MAX_BODY} bytes", "oversize"))
    except web.HTTPException:
        raise
    except Exception as exc:
        log.error("broker error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return web.json_response(
            {"error": "server_error", "error_description": "internal error; see operator logs"},
            status=500,
            headers=NO_STORE,
        )


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise oauth.invalid_request(
            "use Content-Type application/x-www-form-urlencoded (RFC 6749 section 3.2)", "invalid_request"
        )
    raw = await request.read()  # bounded by the app's client_max_size
    try:
        # A urlencoded body is ASCII; UTF-8 arrives percent-encoded and is decoded strictly (no surrogates).
        text = raw.decode("ascii")
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except UnicodeError:
        raise oauth.invalid_request(
            "the form is not valid (percent-encoded) UTF-8", "invalid_request"
        ) from None
    except ValueError:
        raise oauth.invalid_request(
            f"the form has more than {MAX_FORM_FIELDS} fields", "too_many_fields"
        ) from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise oauth.invalid_request(f"parameter {clip(key)} is repeated", "invalid_request")
        out[key] = value
    return out


async def token(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    started = time.perf_counter()
    try:
        result = await rt.exchange.exchange(await read_form(request))
    finally:
        metrics.TOKEN_LATENCY.labels(endpoint="token").observe(time.perf_counter() - started)
    return web.json_response(result.body(), headers=NO_STORE)


async def validate(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    report = await rt.exchange.validate(await read_form(request))
    return web.json_response(report, headers=NO_STORE)


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise oauth.invalid_request("use Content-Type application/json", "invalid_request")
    raw = await request.read()  # bounded by the app's client_max_size
    try:
        body = strict_json.loads(raw, max_depth=MAX_JSON_DEPTH)
    except strict_json.JsonError as exc:
        raise oauth.invalid_request(f"the body is not strict JSON: {exc}", "invalid_request") from None
    if not isinstance(body, dict):
        raise oauth.invalid_request("the body must be a JSON object", "invalid_request")
    return body


async def ssh_sign(request: web.Request) -> web.Response:
    from kubepam.services.certificates import Denied, NotReady, workload_request

    rt = request.app[RUNTIME]
    claims = rt.access.verify(request.headers.get("Authorization"))
    body = await read_json(request)
    namespace, role = workload_request(claims, body)
    try:
        result = rt.issuer.workload_ssh(namespace, role, body, str(claims.get("jti", "")))
    except NotReady as exc:
        raise oauth.temporarily_unavailable(str(exc)) from None
    metrics.record_certificate("ssh", "workload", issued=not isinstance(result, Denied))
    if isinstance(result, Denied):
        raise oauth.access_denied(result.reason, "policy_denied")
    log.info("issued SSH certificate %s for %s/%s", result.key_id, namespace, role)
    return web.json_response(
        {
            "certificate": result.certificate,
            "principals": list(result.principals),
            "keyId": result.key_id,
            "validBefore": result.status()["validBefore"],
        },
        headers=NO_STORE,
    )


def _not_settled(exc: NotSettled) -> web.Response:
    return web.json_response(exc.body(), status=503, headers={**NO_STORE, "Retry-After": "5"})


async def workload_checkout(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    claims = rt.access.verify(request.headers.get("Authorization"))
    body = await read_json(request)
    try:
        answer = await rt.workload_checkouts.checkout(claims, body)
    except NotSettled as exc:
        return _not_settled(exc)
    return web.json_response(answer, status=201, headers=NO_STORE)


async def workload_checkout_status(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    claims = rt.access.verify(request.headers.get("Authorization"))
    ns, name = request.match_info["namespace"], request.match_info["name"]
    return web.json_response(await rt.workload_checkouts.status(claims, ns, name), headers=NO_STORE)


async def workload_checkout_credential(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    claims = rt.access.verify(request.headers.get("Authorization"))
    ns, name = request.match_info["namespace"], request.match_info["name"]
    try:
        answer = await rt.workload_checkouts.credential(claims, ns, name)
    except NotSettled as exc:
        return _not_settled(exc)
    return web.json_response(answer, headers=NO_STORE)


async def workload_checkin(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    claims = rt.access.verify(request.headers.get("Authorization"))
    ns, name = request.match_info["namespace"], request.match_info["name"]
    return web.json_response(
        await rt.workload_checkouts.checkin(claims, ns, name), status=202, headers=NO_STORE
    )


async def enroll(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return web.json_response(await rt.enroller.enroll(await read_json(request)), headers=NO_STORE)


def _agent(request: web.Request) -> Any:
    """The verified agent of a signed request (the server it acts for is always its own)."""
    return request.app[RUNTIME].agents.authenticate(
        request.headers.get("Authorization"), request.method, request.raw_path
    )


async def agent_certificate(request: web.Request) -> web.Response:
    identity = _agent(request)
    body = await read_json(request)
    return web.json_response(await request.app[RUNTIME].agents.renew(identity, body), headers=NO_STORE)


async def agent_access(request: web.Request) -> web.Response:
    identity = _agent(request)
    raw_wait = request.query.get("wait", "0")
    if not raw_wait.isdigit() or int(raw_wait) > 55:
        raise oauth.invalid_request("wait must be a whole number of seconds from 0 to 55")
    etag = request.headers.get("If-None-Match", "").strip().removeprefix("W/").strip('"') or None
    body, current = await request.app[RUNTIME].agents.access(
        identity, etag, int(raw_wait), request.headers.get("User-Agent")
    )
    headers = {**NO_STORE, "ETag": f'"{current}"'}
    if body is None:
        return web.Response(status=304, headers=headers)
    return web.json_response(body, headers=headers)


async def agent_events(request: web.Request) -> web.Response:
    identity = _agent(request)
    body = await read_json(request)
    accepted = await request.app[RUNTIME].agents.record_events(identity, body)
    return web.json_response({"accepted": accepted}, status=202, headers=NO_STORE)


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME].signing.jwks(), headers={"Cache-Control": "max-age=60"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    ready = rt.directory.synced()
    elector = getattr(rt, "elector", None)  # every replica serves the broker; only the leader reconciles
    body = {
        "status": "ready" if ready else "syncing",
        "leader": bool(elector is not None and elector.leading()),
        "holder": str(getattr(elector, "holder", "") or ""),
    }
    return web.json_response(body, status=200 if ready else 503)


async def prometheus(request: web.Request) -> web.Response:
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_app(rt: Runtime, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app[RUNTIME] = rt
    app.add_routes(
        [
            web.post("/v1/token", token),
            web.post("/v1/token/validate", validate),
            web.post("/v1/ssh/sign", ssh_sign),
            web.post("/v1/enroll", enroll),
            web.post("/v1/servers/self/certificate", agent_certificate),
            web.get("/v1/servers/self/access", agent_access),
            web.post("/v1/servers/self/events", agent_events),
            web.post("/v1/checkouts", workload_checkout),
            web.get("/v1/checkouts/{namespace}/{name}", workload_checkout_status),
            web.post("/v1/checkouts/{namespace}/{name}/credential", workload_checkout_credential),
            web.delete("/v1/checkouts/{namespace}/{name}", workload_checkin),
            web.get("/.well-known/jwks.json", jwks),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", prometheus),
            *(extra_routes or []),
        ]
    )
    return app


async def start_broker(rt: Runtime) -> web.AppRunner:
    runner = web.AppRunner(make_app(rt), access_log=log)
    await runner.setup()
    context: ssl.SSLContext | None = None
    if rt.settings.broker_tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(rt.settings.broker_tls_cert, rt.settings.broker_tls_key)
    site = web.TCPSite(runner, rt.settings.broker_host, rt.settings.broker_port, ssl_context=context)
    await site.start()
    return runner
