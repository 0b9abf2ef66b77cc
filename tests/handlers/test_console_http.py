"""The console's HTTP defences with aiohttp's test client and a stand-in API server (a fake `Kube`):
security headers on every answer, cookie flags, CSRF refusal, sessions that expire or are forged, the
sign-in rate limit, and no token in any page; and the Approvals page against a multi-stage request."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kubepam.console.app import make_app
from kubepam.console.kube import KubeError, Person
from kubepam.console.security import RateLimit
from kubepam.console.sessions import Sealer

TOKEN = "alice-secret-token-0123456789"


class FakeKube:
    """Knows one token (alice's); everything else is 401. Records writes."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, str, dict[str, Any]]] = []

    async def close(self) -> None:
        return None

    async def whoami(self, token: str) -> Person:
        if token != TOKEN:
            raise KubeError(401, "Unauthorized")
        return Person("alice", frozenset({"kubepam:users"}))

    async def can(self, token: str, verb: str, resource: str, **kw: Any) -> bool:
        return False

    async def list_or_empty(self, token: str, plural: str, namespace: str = "") -> list[dict[str, Any]]:
        if token != TOKEN:
            raise KubeError(401, "Unauthorized")
        return []

    async def patch(
        self, token: str, plural: str, ns: str, name: str, patch: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        self.patches.append((plural, ns, name, patch))
        return {}


async def client(
    tls: bool = False,
    ttl: timedelta = timedelta(hours=1),
    limiter: RateLimit | None = None,
    kube: FakeKube | None = None,
) -> tuple[TestClient[Any, Any], FakeKube]:
    kube = kube or FakeKube()
    app = make_app(
        kube,  # type: ignore[arg-type]
        session_key=b"k" * 32,
        session_ttl=ttl,
        broker="http://127.0.0.1:1",
        tls=tls,
        secure_cookies=False,
        limiter=limiter,
    )
    c: TestClient[Any, Any] = TestClient(TestServer(app))
    await c.start_server()
    return c, kube


async def sign_in(c: TestClient[Any, Any], token: str = TOKEN) -> Any:
    page = await (await c.get("/login")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return await c.post("/login", data={"csrf": csrf, "token": token}, allow_redirects=False)


@pytest.mark.parametrize("tls", [False, True])
async def test_every_answer_carries_the_security_headers(tls: bool) -> None:
    c, _ = await client(tls=tls)
    try:
        for path in ("/login", "/access", "/static/console.css"):
            resp = await c.get(path, allow_redirects=False)
            csp = resp.headers["Content-Security-Policy"]
            assert (
                "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            )
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert ("Strict-Transport-Security" in resp.headers) is tls
            if not path.startswith("/static"):
                assert resp.headers["Cache-Control"] == "no-store"
    finally:
        await c.close()


async def test_the_session_cookie_is_httponly_strict_and_sealed() -> None:
    c, _ = await client(tls=True)
    try:
        assert (await c.get("/login")).cookies["kubepam_login"]["secure"], "over TLS every cookie is Secure"
    finally:
        await c.close()
    c, _ = await client()
    try:
        resp = await sign_in(c)
        assert resp.status == 303 and resp.headers["Location"] == "/access"
        cookie = resp.cookies["kubepam_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert TOKEN not in cookie.value and "alice" not in cookie.value
        page = await (await c.get("/access")).text()
        assert TOKEN not in page and ">alice</span>" in page
    finally:
        await c.close()


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing() -> None:
    c, kube = await client()
    try:
        await sign_in(c)
        for data in ({}, {"csrf": "wrong"}, {"csrf": "é"}):
            resp = await c.post("/access/checkouts/team-a/x/checkin", data=data)
            assert resp.status == 403 and "CSRF" in await resp.text()
        assert kube.patches == []
        page = await (await c.get("/access")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        resp = await c.post("/access/checkouts/team-a/x/checkin", data={"csrf": csrf}, allow_redirects=False)
        assert resp.status == 303
        assert kube.patches == [("checkouts", "team-a", "x", {"spec": {"checkin": {"requested": True}}})]
    finally:
        await c.close()


async def test_the_sign_in_form_needs_its_own_csrf_token() -> None:
    c, _ = await client()
    try:
        for csrf in ("x", "é"):
            resp = await c.post("/login", data={"csrf": csrf, "token": TOKEN}, allow_redirects=False)
            assert resp.status == 403
    finally:
        await c.close()


async def test_failed_sign_ins_are_rate_limited_and_good_ones_are_not() -> None:
    c, _ = await client(limiter=RateLimit(burst=3, per_minute=1))
    try:
        for _ in range(3):
            assert (await sign_in(c, "wrong")).headers["Location"] == "/login?error=1"
        assert (await sign_in(c, "wrong")).status == 429
        assert (await sign_in(c)).status == 429  # the address is blocked, whatever it sends
    finally:
        await c.close()
    c, _ = await client(limiter=RateLimit(burst=2, per_minute=1))
    try:
        for _ in range(5):
            assert (await sign_in(c)).status == 303
    finally:
        await c.close()


async def test_an_expired_or_foreign_session_is_no_session() -> None:
    now = datetime.now(UTC)
    other = Sealer(b"another key of at least 32 bytes!!", timedelta(hours=1)).new_session(TOKEN, "alice", ())
    c, _ = await client()
    try:
        c.session.cookie_jar.update_cookies({"kubepam_session": other})
        resp = await c.get("/access", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    finally:
        await c.close()
    sealer = Sealer(b"k" * 32, timedelta(seconds=1))
    sealed = sealer.new_session(TOKEN, "alice", ())
    assert sealer.session(sealed) is not None
    assert sealer.open(sealed, ttl=timedelta(seconds=-1)) is None, "past its TTL, the cookie opens to nothing"
    assert now < datetime.now(UTC) + timedelta(seconds=1)


async def test_a_revoked_token_ends_the_session() -> None:
    c, kube = await client()
    try:
        await sign_in(c)

        async def revoked(*a: Any, **kw: Any) -> list[dict[str, Any]]:
            raise KubeError(401, "Unauthorized")

        kube.list_or_empty = revoked  # type: ignore[method-assign]
        resp = await c.get("/history", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
    finally:
        await c.close()


# -- approvals: a request counted against several stages ---------------------------------------------

NS = "team-a"
SOON = (datetime.now(UTC) + timedelta(minutes=50)).strftime("%Y-%m-%dT%H:%M:%SZ")
PEOPLE = {  # token -> who the API server says it is
    TOKEN: Person("alice", frozenset({"kubepam:users", "kubepam:approvers"})),  # an approver, in no stage
    "lead-token-0123456789abcdef": Person("lead", frozenset({"kubepam:approvers"})),
    "sec-token-0123456789abcdefgh": Person("sec", frozenset({"kubepam:approvers", "kubepam:security"})),
    "bob-token-0123456789abcdefghi": Person("bob", frozenset({"kubepam:users"})),
}


def checkout(name: str, requester: str, status: dict[str, Any]) -> dict[str, Any]:
    spec = {"project": "payments", "account": "payments_admin", "requester": requester}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {**spec, "groups": ["kubepam:users"], "reason": "INC-3 ledger stuck"},
        "status": status,
    }


WORLD: dict[str, list[dict[str, Any]]] = {
    "projects": [
        {
            "metadata": {"name": "payments", "namespace": NS},
            "spec": {"sharedAccounts": [{"name": "payments_admin"}]},
        }
    ],
    "checkoutpolicies": [
        {
            "metadata": {"name": "payments", "namespace": NS},
            "spec": {
                "project": "payments",
                "maxDuration": "1h",
                "checkout": {
                    "approval": {
                        "stages": [
                            {"name": "security", "groups": ["kubepam:security"]},
                            {"name": "leads", "users": ["lead"]},
                        ]
                    }
                },
            },
        }
    ],
    "accesspolicies": [
        {
            "metadata": {"name": "people", "namespace": NS},
            "spec": {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "r", "projects": ["payments"], "accounts": ["*"]}],
            },
        }
    ],
    "checkouts": [
        checkout(
            "x",
            "bob",
            {
                "phase": "Pending",
                "approvalRequest": {
                    "id": "checkout-1",
                    "target": "Checkout",
                    "round": 1,
                    "state": "Pending",
                    "requestedAt": "2026-11-22T11:00:00Z",
                    "expiresAt": SOON,
                    "stages": [
                        {"name": "security", "count": 1, "approvedBy": ["sec"]},
                        {"name": "leads", "count": 1, "approvedBy": []},
                    ],
                },
                "approvals": [
                    {
                        "request": "checkout-1",
                        "decision": "Approved",
                        "approver": "sec",
                        "groups": ["kubepam:approvers", "kubepam:security"],
                    }
                ],
            },
        ),
        checkout(  # decided: nothing to vote on
            "y",
            "bob",
            {
                "phase": "Active",
                "holder": "bob",
                "expiresAt": SOON,
                "approvalRequest": {"id": "elevation-2", "target": "Elevation", "state": "Approved"},
                "breakGlass": {
                    "used": True,
                    "at": "2026-11-22T11:01:00Z",
                    "target": "Elevation",
                    "window": "15m",
                },
            },
        ),
    ],
}


class WorldKube(FakeKube):
    """Several people; lists the objects above; an approver may patch checkouts/status."""

    def __init__(self) -> None:
        super().__init__()
        self.votes: list[tuple[str, str, str, list[dict[str, Any]]]] = []

    async def whoami(self, token: str) -> Person:
        if token not in PEOPLE:
            raise KubeError(401, "Unauthorized")
        return PEOPLE[token]

    async def can(self, token: str, verb: str, resource: str, **kw: Any) -> bool:
        return resource == "checkouts" and "kubepam:approvers" in PEOPLE[token].groups

    async def list_or_empty(self, token: str, plural: str, namespace: str = "") -> list[dict[str, Any]]:
        return WORLD.get(plural, [])

    async def create(self, token: str, plural: str, ns: str, body: Any, **kw: Any) -> dict[str, Any]:
        return {}  # only dry runs here

    async def json_patch(
        self, token: str, plural: str, ns: str, name: str, ops: list[dict[str, Any]], **kw: Any
    ) -> dict[str, Any]:
        self.votes.append((PEOPLE[token].username, ns, name, ops))
        return {}


def cards(page: str) -> dict[str, str]:
    return {
        m.group(1): m.group(0)
        for m in re.finditer(
            r'<article class="card approval" data-checkout="([^"]+)".*?</article>', page, re.S
        )
    }


async def test_a_two_stage_request_shows_its_progress_and_only_counted_votes_get_buttons() -> None:
    kube = WorldKube()
    pages: dict[str, str] = {}
    for token, who in PEOPLE.items():
        c, _ = await client(kube=kube)
        try:
            await sign_in(c, token)
            pages[who.username] = await (await c.get("/approvals")).text()
        finally:
            await c.close()
    card = cards(pages["lead"])
    assert list(card) == [f"{NS}/x"], "only the open request is listed"
    assert "security 1/1, leads 0/1" in card[f"{NS}/x"] and 'data-request="checkout-1"' in card[f"{NS}/x"]
    assert ">checkout <small>(checkout-1)" in card[f"{NS}/x"] and "INC-3 ledger stuck" in card[f"{NS}/x"]
    assert 'class="primary approve"' in card[f"{NS}/x"] and "your vote counts for leads" in card[f"{NS}/x"]
    assert 'name="request" value="checkout-1"' in card[f"{NS}/x"]
    # alice is an approver, but in neither stage: her vote would not count, so no button.
    alice = cards(pages["alice"])[f"{NS}/x"]
    assert "<button" not in alice and "alice is not an approver for any stage" in alice
    assert "already voted" in cards(pages["sec"])[f"{NS}/x"] and "<form" not in cards(pages["sec"])[f"{NS}/x"]
    assert "Your own request" in cards(pages["bob"])[f"{NS}/x"]


async def test_a_vote_is_one_json_patch_append_naming_the_request() -> None:
    kube = WorldKube()
    c, _ = await client(kube=kube)
    try:
        await sign_in(c, "lead-token-0123456789abcdef")
        page = await (await c.get("/approvals")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = {"csrf": csrf, "decision": "approve", "comment": " ok ", "request": "checkout-1"}
        page = await (await c.post(f"/approvals/{NS}/x", data=form)).text()
        assert f"checkout of {NS}/x: approved" in page
        vote = {"request": "checkout-1", "decision": "Approved", "comment": "ok"}
        assert kube.votes == [
            ("lead", NS, "x", [{"op": "add", "path": "/status/approvals/-", "value": vote}])
        ]
        for bad in ("", "checkout", "x-1", "checkout-1/../../spec"):
            resp = await c.post(f"/approvals/{NS}/x", data={**form, "request": bad})
            assert resp.status == 400
        assert len(kube.votes) == 1
    finally:
        await c.close()


async def test_my_access_accounts_and_request_show_approvals_and_break_glass() -> None:
    c, _ = await client(kube=WorldKube())
    try:
        await sign_in(c, "bob-token-0123456789abcdefghi")
        page = await (await c.get("/request")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        form = {"csrf": csrf, "target": f"{NS}/payments/payments_admin", "reason": "INC-4", "action": "check"}
        page = await (await c.post("/request/checkout", data=form)).text()
        assert "needs approval before the account is handed out: security (1), leads (1)" in page
        page = await (await c.get("/access")).text()
        assert "waiting for approval: security 1/1, leads 0/1" in page
        assert 'class="error break-glass"' in page and "window capped at 15m" in page
        page = await (await c.get("/accounts")).text()
        assert "bob: waiting for approval: security 1/1, leads 0/1" in page
        assert 'class="error break-glass"' in page
    finally:
        await c.close()
