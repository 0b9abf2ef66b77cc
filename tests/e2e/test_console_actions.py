"""Every console page and action over HTTP against the real control plane, allowed and forbidden: the
console acts with each person's own token, so what RBAC or an admission policy refuses for kubectl it
refuses here too, and the API server's own sentence is what the person reads. Nothing works without a
session or with a forged one, and no token ever appears in a page or the console's log."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from html import unescape
from typing import Any

import aiohttp
import pytest

from tests.e2e.console_world import ACTIONS_ACCOUNT, CONNECTION, NS, PROJECT, ConsoleServer
from tests.e2e.harness import kubectl_json

PAGES = ("/access", "/request", "/approvals", "/accounts", "/history", "/connections")
ACTIONS = (
    "/logout",
    f"/access/checkouts/{NS}/x/checkin",
    f"/access/checkouts/{NS}/x/extend",
    f"/access/checkouts/{NS}/x/elevate",
    f"/access/jit/{NS}/x/disable",
    f"/access/reveal/checkouts/{NS}/x",
    "/request/checkout",
    "/request/jit",
    f"/approvals/{NS}/x",
    f"/accounts/force/{NS}/x",
    "/connections/explain",
    f"/connections/{NS}/{CONNECTION}/phase",
)


class Client:
    """One person's browser-less session: a cookie jar, the CSRF token of the last page, the flash."""

    def __init__(self, console: ConsoleServer, http: aiohttp.ClientSession) -> None:
        self.console, self.http = console, http
        self.csrf = ""
        self.pages: list[str] = []

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.console.url + path) as resp:
            text = await resp.text()
        self.pages.append(text)
        if m := re.search(r'name="csrf" value="([^"]+)"', text):
            self.csrf = m.group(1)
        return resp.status, text

    async def sign_in(self, who: str) -> None:
        await self.get("/login")
        async with self.http.post(
            self.console.url + "/login", data={"csrf": self.csrf, "token": self.console.token(who)}
        ) as resp:
            text = await resp.text()
            assert resp.status == 200 and str(resp.url).endswith("/access"), (resp.status, resp.url)
        self.pages.append(text)
        self.csrf = re.search(r'name="csrf" value="([^"]+)"', text).group(1)  # type: ignore[union-attr]

    async def post(
        self, path: str, form: dict[str, Any] | None = None, *, csrf: bool = True
    ) -> tuple[int, str]:
        data = dict(form or {})
        if csrf:
            data["csrf"] = self.csrf
        async with self.http.post(self.console.url + path, data=data) as resp:
            text = await resp.text()
        self.pages.append(text)
        return resp.status, text


def flash(page: str) -> str:
    m = re.search(r'id="flash">(.*?)</p>', page, re.S)
    return unescape(m.group(1)) if m else ""


@pytest.fixture
async def people(console: ConsoleServer) -> AsyncIterator[Callable[[str], Any]]:
    sessions: list[aiohttp.ClientSession] = []
    clients: list[Client] = []

    async def as_person(who: str) -> Client:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(http)
        client = Client(console, http)
        await client.sign_in(who)
        clients.append(client)
        return client

    yield as_person
    for s in sessions:
        await s.close()
    # No page anyone saw carries a token.
    tokens = [console.token(w) for w in ("alice", "bob", "approver", "secadmin", "devops")]
    for c in clients:
        for page in c.pages:
            assert not any(t in page for t in tokens)


async def test_nothing_works_without_a_session_or_with_a_forged_one(console: ConsoleServer) -> None:
    forged = {"kubepam_session": "gAAAAABforged"}
    for cookies in ({}, forged):
        async with aiohttp.ClientSession(cookies=cookies) as http:
            for path in PAGES:
                async with http.get(console.url + path, allow_redirects=False) as resp:
                    assert resp.status == 303 and resp.headers["Location"] == "/login", path
            for path in ACTIONS:
                async with http.post(console.url + path, data={"csrf": "x"}, allow_redirects=False) as resp:
                    assert resp.status == 303 and resp.headers["Location"] == "/login", path


async def test_a_token_the_api_server_rejects_signs_nobody_in(console: ConsoleServer) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        client = Client(console, http)
        await client.get("/login")
        async with http.post(
            console.url + "/login", data={"csrf": client.csrf, "token": "not-a-token"}, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login?error=1"
            assert "kubepam_session" not in resp.cookies


async def test_every_page_renders_for_every_persona(console: ConsoleServer, people: Any) -> None:
    for who in ("alice", "approver", "secadmin", "devops"):
        client = await people(who)
        for path in PAGES:
            status, text = await client.get(path)
            assert status == 200, (who, path, text[:300])
            assert 'id="whoami" title="' in text and f">{who}</span>" in text


async def test_checkout_actions_are_the_holders_alone(console: ConsoleServer, people: Any) -> None:
    alice, bob = await people("alice"), await people("bob")
    target = f"{NS}/{PROJECT}/{ACTIONS_ACCOUNT}"
    status, page = await alice.post(
        "/request/checkout",
        {"target": target, "reason": "CHG-1 rotate certs", "duration": "10m", "action": "submit"},
    )
    assert status == 200 and "created" in flash(page), flash(page)
    name = re.search(rf"checkout {NS}/(\S+) created", flash(page)).group(1)  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while (kubectl_json(console.plane, "admin", "get", "checkout", name, "-n", NS).get("status") or {}).get(
        "phase"
    ) != "Active":
        assert time.monotonic() < deadline, "checkout not Active"
        await asyncio.sleep(0.3)

    # CSRF: a post without the form's token is refused and changes nothing.
    status, _ = await alice.post(f"/access/checkouts/{NS}/{name}/checkin", csrf=False)
    assert status == 403
    # bob cannot check in, extend, elevate or reveal alice's checkout: the API server says why.
    _, page = await bob.post(f"/access/checkouts/{NS}/{name}/checkin")
    assert "only the requester" in flash(page) or "alice" in flash(page), flash(page)
    _, page = await bob.post(f"/access/reveal/checkouts/{NS}/{name}")
    assert "no credential for you" in flash(page), flash(page)
    _, page = await bob.post(f"/access/checkouts/{NS}/{name}/extend", {"duration": "30m"})
    assert "alice" in flash(page), flash(page)
    # nor can he force it: only security admins may.
    _, page = await bob.post(f"/accounts/force/{NS}/{name}", {"confirm": name})
    assert "only the requester (alice) or a security admin may change this checkout" in flash(page), flash(
        page
    )
    spec = kubectl_json(console.plane, "admin", "get", "checkout", name, "-n", NS)["spec"]
    assert "checkin" not in spec and spec["duration"] == "10m"

    # alice extends (up to the maximum) and asks for elevation; she cannot decide it herself.
    _, page = await alice.post(f"/access/checkouts/{NS}/{name}/extend", {"duration": "30m"})
    assert "extension" in flash(page), flash(page)
    _, page = await alice.post(f"/access/checkouts/{NS}/{name}/elevate", {"reason": "CHG-1 needs view"})
    assert "elevation requested" in flash(page), flash(page)
    # the operator opens the approval request the votes name
    opened = await settled(
        console, name, lambda s: (s.get("approvalRequest") or {}).get("state") == "Pending"
    )
    assert opened["approvalRequest"]["id"] == "elevation-1", opened
    assert opened["approvalRequest"]["target"] == "Elevation", opened
    vote = {"decision": "approve", "comment": "me", "request": "elevation-1"}
    _, page = await alice.post(f"/approvals/{NS}/{name}", vote)
    assert "forbidden" in flash(page).lower(), flash(page)  # RBAC: alice may not write checkouts/status
    _, page = await alice.get("/access")
    assert "elevation waiting for approval: approvers 0/1" in page
    approver = await people("approver")
    status, page = await approver.get("/approvals")
    assert f'data-checkout="{NS}/{name}"' in page and 'class="primary approve"' in page
    assert 'name="request" value="elevation-1"' in page and "approvers 0/1" in page
    _, page = await approver.post(
        f"/approvals/{NS}/{name}", {"decision": "deny", "comment": "not now", "request": "elevation-1"}
    )
    assert flash(page) == f"elevation of {NS}/{name}: denied", flash(page)
    denied = await settled(console, name, lambda s: (s.get("elevation") or {}).get("state") == "DENIED")
    assert denied["approvals"][-1] == {
        "request": "elevation-1",
        "decision": "Denied",
        "comment": "not now",
        "approver": "approver",
        "groups": denied["approvals"][-1]["groups"],
    }, denied["approvals"]
    assert "kubepam:approvers" in denied["approvals"][-1]["groups"], "stamped by the API server"
    assert denied["approvalRequest"]["state"] == "Denied" and denied["approvalRequest"]["deniedBy"] == [
        "approver"
    ]
    # a decided request takes no more votes: the API server's refusal is what the approver reads
    _, page = await approver.post(
        f"/approvals/{NS}/{name}", {"decision": "approve", "comment": "", "request": "elevation-1"}
    )
    assert "nothing to approve: request elevation-1 is Denied" in flash(page), flash(page)
    _, page = await alice.get("/history?q=not+now")
    assert "Denied elevation-1 for alice: not now" in unescape(page), "the vote is in the history"

    _, page = await alice.post(f"/access/checkouts/{NS}/{name}/checkin")
    assert "check-in requested" in flash(page), flash(page)
    checkin = kubectl_json(console.plane, "admin", "get", "checkout", name, "-n", NS)["spec"]["checkin"]
    assert checkin["requested"] is True and not checkin.get("force")


async def settled(console: ConsoleServer, name: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The checkout's status once the operator has brought it to where `ok` says (within 30s)."""
    deadline = time.monotonic() + 30
    while True:
        status = kubectl_json(console.plane, "admin", "get", "checkout", name, "-n", NS).get("status") or {}
        if ok(status):
            return dict(status)
        assert time.monotonic() < deadline, f"checkout {name} never settled: {status}"
        await asyncio.sleep(0.3)


async def test_promotion_is_for_security_admins_alone(console: ConsoleServer, people: Any) -> None:
    devops, sec = await people("devops"), await people("secadmin")
    _, page = await devops.get("/connections")
    assert (
        "promote"
        not in page.split('id="connections"')[1].split("</table>")[0].lower().replace("promote or demote", "")
        or 'class="primary promote"' not in page
    )
    _, page = await devops.post(f"/connections/{NS}/{CONNECTION}/phase", {"to": "promote"})
    assert "forbidden" in flash(page).lower(), flash(page)
    _, page = await sec.post(f"/connections/{NS}/{CONNECTION}/phase", {"to": "promote"})
    assert "now Active" in flash(page), flash(page)
    status = kubectl_json(console.plane, "admin", "get", "workloadconnection", CONNECTION, "-n", NS)["status"]
    assert status["phase"] == "Active" and status["activatedBy"] == "secadmin"
    _, page = await sec.post(f"/connections/{NS}/{CONNECTION}/phase", {"to": "demote"})
    assert "now Draft" in flash(page), flash(page)
    # The explain trace for a pasted token: the broker's report, the token not echoed back.
    _, page = await sec.post("/connections/explain", {"connection": f"{NS}/{CONNECTION}", "token": "a.b.c"})
    assert 'id="report"' in page and "a.b.c" not in page.split('id="report"')[1]


async def test_jit_request_dry_run_then_create(console: ConsoleServer, people: Any) -> None:
    bob = await people("bob")
    form = {
        "project": f"{NS}/{PROJECT}",
        "groups": "edit",
        "duration": "1h",
        "reason": "debug",
        "action": "check",
    }
    _, page = await bob.post("/request/jit", form)
    assert (
        "not in project ops&#39;s allowed JIT groups" in page
        or "not in project ops's allowed" in unescape(page)
    )
    form |= {"groups": "view", "duration": "3h"}
    _, page = await bob.post("/request/jit", form)
    assert "exceeds project ops&#39;s maximum" in page or "exceeds project ops's maximum" in unescape(page)
    form |= {"duration": "1h"}
    _, page = await bob.post("/request/jit", form)
    assert "would be enabled for 1h" in unescape(page) and "would accept" in page
    _, page = await bob.post("/request/jit", form | {"action": "submit"})
    assert "requested" in flash(page), flash(page)
    obj = kubectl_json(console.plane, "admin", "get", "jitaccount", "bob", "-n", NS)
    assert obj["spec"]["owner"] == "bob" and obj["spec"]["groups"] == ["view"]
    phase = await wait_jit_phase(console, "bob", "Active")
    assert phase["phase"] == "Active"
    _, page = await bob.get("/access")
    assert f'data-jit="{NS}/bob"' in page and 'class="disable"' in page
    # Only the owner (or a security admin) may end it early; then it is disabled at once.
    alice = await people("alice")
    _, page = await alice.post(f"/access/jit/{NS}/bob/disable")
    assert "only the owner (bob)" in flash(page), flash(page)
    _, page = await bob.post(f"/access/jit/{NS}/bob/disable")
    assert "disable requested" in flash(page), flash(page)
    assert "disabled early" in (await wait_jit_phase(console, "bob", "Disabled"))["message"]


async def wait_jit_phase(console: ConsoleServer, name: str, phase: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status = kubectl_json(console.plane, "admin", "get", "jitaccount", name, "-n", NS).get("status") or {}
        if status.get("phase") == phase:
            return dict(status)
        assert time.monotonic() < deadline, f"JIT account {name} not {phase}: {status}"
        await asyncio.sleep(0.3)


async def test_history_exports_csv_and_json(console: ConsoleServer, people: Any) -> None:
    alice = await people("alice")
    status, body = await alice.get("/history?format=json")
    assert status == 200
    rows = json.loads(body)
    assert all(set(r) == {"time", "kind", "who", "namespace", "project", "account", "detail"} for r in rows)
    status, body = await alice.get("/history?format=csv&kind=checkout")
    assert status == 200 and body.splitlines()[0] == "time,kind,who,namespace,project,account,detail"
    assert all(",checkout," in line for line in body.splitlines()[1:])


def test_the_console_log_carries_no_token(console: ConsoleServer) -> None:
    text = console.log.read_text()
    assert "signed in" in text
    for who in ("alice", "bob", "approver", "secadmin", "devops"):
        assert console.token(who) not in text
