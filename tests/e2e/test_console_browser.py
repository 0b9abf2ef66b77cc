"""The console in a real browser (Selenium driving Debian's headless Chromium) against the real control
plane and operator: alice checks out, bob sees the account held by alice with the time left and cannot
take it, alice requests elevation, an approver who signs in through the identity provider approves, the
security admin forces the check-in, and alice's history shows it all. Each person has their own browser
(their own cookie jar). Screenshots of every page go to the test's output directory (and to
$KUBEPAM_SCREENSHOTS when set, for README)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_world import BROWSER_ACCOUNT, NS, PROJECT, ConsoleServer
from tests.e2e.harness import kubectl_json

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (hack/deps.sh installs them)",
)


class Browser:
    """One person's headless Chromium, signed in to the console with their own token."""

    def __init__(self, console: ConsoleServer, who: str, shots: Path, oidc: bool = False) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1100,1000",
            f"--user-data-dir={shots.parent / ('profile-' + who)}",
        ):
            options.add_argument(arg)
        if oidc:  # the local identity provider's HTTPS: trust exactly its key
            options.add_argument(f"--ignore-certificate-errors-spki-list={console.idp.spki}")
        self.driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        self.driver.set_page_load_timeout(30)
        self.console, self.who, self.shots, self.oidc = console, who, shots, oidc

    def open(self, path: str) -> None:
        self.driver.get(self.console.url + path)

    def el(self, css: str, timeout: float = 10) -> Any:
        """The element, once the page that has it is loaded (a click's navigation may still be going)."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
            )
        except TimeoutException:
            self.shot(f"missing-{self.who}")
            body = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"{self.who}: no {css} on {self.driver.current_url}:\n{body}") from None

    def els(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self) -> str:
        return str(self.el("main").text)

    def sign_in(self) -> None:
        self.open("/login")
        if self.oidc:  # through the identity provider's own sign-in page, and back
            self.el("#oidc-sign-in").click()
            self.el("#idp-username").send_keys(self.who)
            self.shot("0-identity-provider")
            self.el("#idp-sign-in").click()
        else:
            self.el("#token").send_keys(self.console.token(self.who))
            self.el("#sign-in").click()
        self.wait(lambda: self.driver.current_url.endswith("/access"), "the sign-in to land on My access")
        expected = f"oidc:{self.who}" if self.oidc else self.who
        assert self.el("#whoami").text == expected

    def wait(self, ok: Callable[[], bool], what: str, timeout: float = 30, reload: bool = False) -> None:
        from selenium.common.exceptions import StaleElementReferenceException

        def holds() -> bool:
            try:
                return ok()
            except (StaleElementReferenceException, AssertionError):
                return False  # the page changed under us (a navigation or reload): look again

        deadline = time.monotonic() + timeout
        while not holds():
            if time.monotonic() > deadline:
                self.shot(f"timeout-{self.who}")
                raise AssertionError(f"{self.who}: waited {timeout:.0f}s for {what}; page:\n{self.text()}")
            time.sleep(0.5)
            if reload:
                self.driver.refresh()

    def shot(self, name: str) -> None:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        target = os.environ.get("KUBEPAM_SCREENSHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browsers(console: ConsoleServer, tmp_path: Path) -> Iterator[Callable[..., Browser]]:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    opened: list[Browser] = []

    def open_as(who: str, oidc: bool = False) -> Browser:
        browser = Browser(console, who, shots, oidc)
        opened.append(browser)
        browser.sign_in()
        return browser

    try:
        yield open_as
    finally:
        for b in opened:
            b.quit()
        print(f"screenshots: {shots}")


def checkout_of(console: ConsoleServer, who: str) -> dict[str, Any]:
    items = kubectl_json(console.plane, "admin", "get", "checkouts", "-n", NS)["items"]
    mine = [
        o
        for o in items
        if o["spec"]["requester"] == who
        and o["spec"]["account"] == BROWSER_ACCOUNT
        and (o.get("status") or {}).get("phase") not in ("Denied",)
    ]
    assert mine, f"no checkout of {BROWSER_ACCOUNT} by {who}"
    return max(mine, key=lambda o: o["metadata"]["creationTimestamp"])


def test_checkout_hold_elevate_approve_force_and_history_in_a_browser(
    console: ConsoleServer, browsers: Callable[..., Browser]
) -> None:
    from selenium.webdriver.support.ui import Select

    target = f"{NS}/{PROJECT}/{BROWSER_ACCOUNT}"

    # alice: a dry run first (the operator's own rules), then the checkout itself.
    alice = browsers("alice")
    alice.shot("1-my-access-empty")
    alice.open("/request")
    Select(alice.el("#target")).select_by_value(target)
    alice.el("#duration").send_keys("20m")
    alice.el("#reason").send_keys("INC-7 restart the stuck job")
    alice.el("#check-checkout").click()
    verdict = alice.el("#verdict-text").text
    assert verdict.startswith("Allowed"), verdict
    assert "20m" in verdict
    assert "would accept" in alice.el("#server-verdict").text
    alice.shot("2-request-dry-run")
    alice.el("#submit-checkout").click()
    alice.wait(lambda: "created" in alice.el("#flash").text, "the checkout to be created")
    alice.wait(
        lambda: any(p.text == "Active" for p in alice.els(f"[data-account='{target}'] .phase")),
        "the checkout to become Active",
        reload=True,
    )
    card = alice.el(f"[data-account='{target}']")
    left = card.find_element("css selector", "time.countdown").text
    assert left and left != "0s", left
    alice.shot("3-my-access-active")
    card.find_element("css selector", "button.reveal").click()
    alice.el("pre.secret")  # the click's navigation may still be going: wait for the page that has it
    secret = alice.els("pre.secret")
    assert secret and all(s.text for s in secret), "the credential is shown on click"
    alice.shot("4-reveal")

    # bob: sees alice holding it with the time left, and the dry run says he cannot have it.
    bob = browsers("bob")
    bob.open("/accounts")
    row = bob.el(f"tr[data-account='{target}']")
    assert row.find_element("css selector", ".holder").text == "alice"
    assert row.find_element("css selector", "time.countdown").text not in ("", "0s")
    assert not bob.els("a.force"), "bob is offered no force check-in"
    bob.shot("5-shared-accounts-bob")
    bob.open("/request")
    Select(bob.el("#target")).select_by_value(target)
    bob.el("#reason").send_keys("I want it too")
    bob.el("#check-checkout").click()
    assert "checked out by alice" in bob.el("#verdict-text").text
    assert "alice" in bob.el("#held-by").text
    bob.shot("6-request-taken")
    assert not bob.els("nav a[href='/approvals']"), "bob is not an approver: no Approvals page offered"

    # alice asks for elevation on the account she holds.
    alice.open("/access")
    alice.el(f"[data-account='{target}'] .elevation-reason").send_keys("INC-7 needs view in console-apps")
    alice.el(f"[data-account='{target}'] button.elevate").click()
    alice.wait(
        lambda: "PENDING" in alice.el(f"[data-account='{target}'] .elevation").text,
        "the elevation to be pending",
        reload=True,
    )

    alice.wait(
        lambda: (
            "elevation waiting for approval: approvers 0/1" in alice.el(f"[data-account='{target}']").text
        ),
        "the operator to open the elevation's approval request",
        reload=True,
    )

    # an approver, signed in with the identity provider (oidc:carol, in kubepam:approvers), approves.
    approver = browsers("carol", oidc=True)
    approver.open("/approvals")
    name = checkout_of(console, "alice")["metadata"]["name"]
    card = approver.el(f"article.approval[data-checkout='{NS}/{name}']")
    assert card.get_attribute("data-request") == "elevation-1"
    assert "INC-7 needs view" in card.text and "approvers 0/1" in card.text, card.text
    approver.shot("7-approvals")
    card.find_element("css selector", "input.comment").send_keys("ok for INC-7")
    card.find_element("css selector", "button.approve").click()
    approver.wait(
        lambda: approver.el("#flash").text == f"elevation of {NS}/{name}: approved", "the vote to be recorded"
    )
    alice.wait(
        lambda: alice.el(f"[data-account='{target}'] .elevation").text.startswith(("APPROVED", "ELEVATED")),
        "the elevation to be approved",
        reload=True,
    )

    # the security admin forces the check-in, after typing the checkout's name.
    sec = browsers("secadmin")
    sec.open("/accounts")
    sec.el(f"tr[data-account='{target}'] a.force").click()
    sec.shot("8-force-confirm")
    sec.el("#confirm").send_keys(name)
    sec.el("#force-confirm").click()
    sec.wait(lambda: "forced check-in requested" in sec.el("#flash").text, "the forced check-in")
    sec.wait(
        lambda: "free" in sec.el(f"tr[data-account='{target}'] .state").text,
        "the account to be free again",
        reload=True,
    )
    sec.shot("9-shared-accounts-free")
    sec.open("/connections")
    assert sec.els("button.promote") or sec.els("button.demote"), "security admins may promote"
    sec.shot("10-connections")
    final = checkout_of(console, "alice")["status"]
    assert final["phase"] == "CheckedIn" and final["checkinReason"] == "Forced", final

    # alice's history shows it all: the checkout, bob's refusal, her elevation, the approval, the check-in.
    alice.open("/history?q=" + BROWSER_ACCOUNT)
    rows = [r.text for r in alice.els("#history tbody tr")]
    kinds = {r.split()[1] for r in rows if len(r.split()) > 1}
    assert {"checkout", "elevation", "approval", "checkin"} <= kinds, rows
    assert any("oidc:carol" in r and "Approved elevation-1 for alice: ok for INC-7" in r for r in rows), rows
    assert any("Forced" in r for r in rows), rows
    alice.shot("11-history")
    assert alice.el("#export-csv").get_attribute("href").endswith("format=csv")


def test_every_page_fits_a_narrow_window(console: ConsoleServer, browsers: Callable[..., Browser]) -> None:
    """A phone-width window: no page scrolls sideways (tables become cards, forms wrap)."""
    sec = browsers("secadmin")
    sec.driver.set_window_size(400, 900)
    for path in ("/access", "/request", "/approvals", "/accounts", "/history", "/connections"):
        sec.open(path)
        sec.el("h1")
        overflow = sec.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} scrolls sideways by {overflow}px at 400px wide"
    sec.open("/accounts")
    sec.shot("12-narrow-accounts")
