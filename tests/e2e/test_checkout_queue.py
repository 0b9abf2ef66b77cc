"""The waiting line for a shared account on the real control plane: five people wait for one account and
get it in the order they asked, each only after the previous holder's check-in has rotated the password;
positions stay 1..k; an offer nobody claims runs out and passes on (without a rotation); a cancel and a
deletion leave the line; an admin cannot claim for someone; and `kubepam checkout --wait` / `claim`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubepam.dev.cluster import ControlPlane
from kubepam.domain.ownership import derived_name, qualified
from tests.e2e.harness import (
    OperatorProcess,
    apply,
    kubectl_json,
    kubepam_object,
    object_status,
    team_namespace,
    wait_for,
    wait_status,
)

NS = "queue"
PROJECT = "q"
FIVE, OFFER, CANCEL, CLI = "line_five", "line_offer", "line_cancel", "line_cli"  # one account per case


@pytest.fixture(scope="module")
def line(plane: ControlPlane, operator: OperatorProcess) -> Iterator[None]:
    team_namespace(plane, NS)
    apply(
        plane,
        "devops",
        kubepam_object(
            "Project",
            PROJECT,
            {"sharedAccounts": [{"name": a, "backend": "kubernetes"} for a in (FIVE, OFFER, CANCEL, CLI)]},
            NS,
        ),
        kubepam_object(
            "CheckoutPolicy",
            PROJECT,
            {
                "project": PROJECT,
                "maxDuration": "30m",
                "rotation": {"onUserCheckin": True},
                "checkout": {"claimWindow": "10s"},
            },
            NS,
        ),
        kubepam_object(
            "AccessPolicy",
            "people",
            {
                "principals": {"groups": ["kubepam:users"]},
                "rules": [{"name": "line", "projects": [PROJECT], "accounts": ["*"]}],
            },
            NS,
        ),
    )
    assert wait_for(plane, "devops", f"project/{PROJECT}", "condition=Ready", NS).returncode == 0
    assert wait_for(plane, "devops", f"checkoutpolicy/{PROJECT}", "condition=Ready", NS).returncode == 0
    yield


def as_user(
    plane: ControlPlane, user: str, *args: str, input_text: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """kubectl as an ordinary user (impersonated: the API server stamps them as the requester)."""
    return plane.kubectl(
        "admin",
        *args,
        "--as",
        user,
        "--as-group",
        "kubepam:users",
        "--as-group",
        "system:authenticated",
        input_text=input_text,
        check=check,
    )


def create(plane: ControlPlane, user: str, name: str, account: str, **spec: Any) -> None:
    body = kubepam_object(
        "Checkout",
        name,
        {"project": PROJECT, "account": account, "requester": user, "reason": f"line test by {user}", **spec},
        NS,
    )
    as_user(plane, user, "create", "-f", "-", input_text=json.dumps(body))


def patch_spec(
    plane: ControlPlane, user: str, name: str, spec: dict[str, Any], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return as_user(
        plane,
        user,
        "patch",
        "checkout",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
        check=check,
    )


def phase(plane: ControlPlane, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
    return wait_status(plane, "checkout", name, NS, lambda s: s.get("phase") in phases, timeout)


def queued_positions(plane: ControlPlane, names: list[str]) -> dict[str, Any]:
    items = kubectl_json(plane, "admin", "get", "checkouts", "-n", NS)["items"]
    return {
        obj["metadata"]["name"]: ((obj.get("status") or {}).get("queue") or {}).get("position")
        for obj in items
        if obj["metadata"]["name"] in names and (obj.get("status") or {}).get("phase") == "Queued"
    }


def settle_positions(plane: ControlPlane, expected: dict[str, int], timeout: float = 30) -> None:
    """The written positions reach exactly ``expected`` (1..k in order, no gap) once the line has moved."""
    assert sorted(expected.values()) == list(range(1, len(expected) + 1))
    deadline = time.monotonic() + timeout
    while True:
        seen = queued_positions(plane, list(expected))
        if seen == expected or time.monotonic() > deadline:
            assert seen == expected
            return
        time.sleep(0.2)


def line_on_the_lease(plane: ControlPlane, holder_checkout: str) -> list[str]:
    """The waiting line as the account's Lease holds it (the order the API server accepted)."""
    for lease in kubectl_json(plane, "admin", "get", "leases", "-n", NS)["items"]:
        notes = lease["metadata"].get("annotations") or {}
        if notes.get("kubepam.io/checkout") == holder_checkout:
            return [w["checkout"] for w in json.loads(notes.get("kubepam.io/queue") or "[]")]
    raise AssertionError(f"no lease held by {holder_checkout}")


def column(table: str, name: str, header: str) -> str:
    """A cell of a printed table (kubectl's or kubepam's: columns start where their header does)."""
    head, *rows = table.splitlines()
    row = next(r for r in rows if name in r.split()[:2])
    at = head.index(header)
    cell = row[at:].split()[0] if len(row) > at and row[at] != " " else ""
    return "" if cell == "<none>" else cell


def password_of(plane: ControlPlane, checkout: str) -> str:
    secret = object_status(plane, "checkout", checkout, NS)["secretName"]
    data = kubectl_json(plane, "admin", "get", "secret", secret, "-n", NS)["data"]
    return base64.b64decode(data["password"]).decode()


def account_password(plane: ControlPlane, account: str) -> str:
    uid = kubectl_json(plane, "admin", "get", "project", PROJECT, "-n", NS)["metadata"]["uid"]
    name = qualified(derived_name("account", PROJECT, uid), account)
    data = kubectl_json(plane, "admin", "get", "secret", name, "-n", NS)["data"]
    return base64.b64decode(data["password"]).decode()


def test_five_wait_for_one_account_and_get_it_in_order_after_each_rotation(
    plane: ControlPlane, line: None
) -> None:
    create(plane, "five-holder", "five-0", FIVE)
    phase(plane, "five-0", "Active")
    waiting = [f"five-{i}" for i in range(1, 6)]
    for place, name in enumerate(waiting, start=1):  # one after another: the line is creation order
        create(plane, f"{name}-user", name, FIVE, queue=True, claim=True)
        assert phase(plane, name, "Queued")["queue"]["position"] == place
    settle_positions(plane, {name: i for i, name in enumerate(waiting, start=1)})
    assert line_on_the_lease(plane, "five-0") == waiting
    table = plane.kubectl("admin", "get", "checkouts", "-n", NS).stdout
    assert column(table, "five-3", "POSITION") == "3" and column(table, "five-0", "POSITION") == ""

    holder, holder_user = "five-0", "five-holder"
    for i, name in enumerate(waiting):
        before = password_of(plane, holder)
        patch_spec(plane, holder_user, holder, {"checkin": {"requested": True}})
        done = phase(plane, holder, "CheckedIn")
        assert done["rotation"]["required"] and done["rotation"]["completedAt"], done
        active = phase(plane, name, "Active")
        assert active["holder"] == f"{name}-user"
        assert active["grantedAt"] >= done["rotation"]["completedAt"]  # rotated before it was handed on
        assert password_of(plane, name) != before
        rest = waiting[i + 1 :]
        settle_positions(plane, {n: j for j, n in enumerate(rest, start=1)})  # nobody skipped ahead
        if rest:
            assert line_on_the_lease(plane, name) == rest
        holder, holder_user = name, f"{name}-user"
    patch_spec(plane, holder_user, holder, {"checkin": {"requested": True}})
    phase(plane, holder, "CheckedIn")


def test_an_unclaimed_offer_expires_and_the_account_passes_on(plane: ControlPlane, line: None) -> None:
    create(plane, "offer-holder", "offer-0", OFFER)
    phase(plane, "offer-0", "Active")
    create(plane, "offer-1-user", "offer-1", OFFER, queue=True)  # does not claim
    create(plane, "offer-2-user", "offer-2", OFFER, queue=True, claim=True)
    settle_positions(plane, {"offer-1": 1, "offer-2": 2})
    patch_spec(plane, "offer-holder", "offer-0", {"checkin": {"requested": True}})
    assert phase(plane, "offer-0", "CheckedIn")["rotation"]["completedAt"]
    offered = phase(plane, "offer-1", "Offered")
    assert offered["offer"]["expiresAt"] and "queue" not in offered
    settle_positions(plane, {"offer-2": 1})
    rotated = account_password(plane, OFFER)
    # nobody claims an account for someone else, a security admin included
    refused = plane.kubectl(
        "secadmin",
        "patch",
        "checkout",
        "offer-1",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"claim":true}}',
        check=False,
    )
    assert refused.returncode != 0 and "only the requester (offer-1-user) may change" in refused.stderr
    expired = phase(plane, "offer-1", "Expired", timeout=40)
    assert expired["message"] == "offer not claimed within 10s"
    active = phase(plane, "offer-2", "Active")
    assert active["holder"] == "offer-2-user"
    assert account_password(plane, OFFER) == rotated == password_of(plane, "offer-2")  # no rotation
    # an offer claimed later: the checkout's time starts at the claim
    create(plane, "offer-3-user", "offer-3", OFFER, queue=True)
    phase(plane, "offer-3", "Queued")
    patch_spec(plane, "offer-2-user", "offer-2", {"checkin": {"requested": True}})
    offered = phase(plane, "offer-3", "Offered")
    patch_spec(plane, "offer-3-user", "offer-3", {"claim": True})
    claimed = phase(plane, "offer-3", "Active")
    assert claimed["grantedAt"] <= offered["offer"]["expiresAt"]
    patch_spec(plane, "offer-3-user", "offer-3", {"checkin": {"requested": True}})
    phase(plane, "offer-3", "CheckedIn")


def test_cancel_and_delete_leave_the_line_and_the_rest_renumber(plane: ControlPlane, line: None) -> None:
    create(plane, "cancel-holder", "cancel-0", CANCEL)
    phase(plane, "cancel-0", "Active")
    waiting = ["cancel-1", "cancel-2", "cancel-3", "cancel-4"]
    for name in waiting:
        create(plane, f"{name}-user", name, CANCEL, queue=True, claim=True)
    settle_positions(plane, {n: i for i, n in enumerate(waiting, start=1)})
    patch_spec(plane, "cancel-2-user", "cancel-2", {"checkin": {"requested": True}})
    assert phase(plane, "cancel-2", "Cancelled")["message"] == "left the line"
    settle_positions(plane, {"cancel-1": 1, "cancel-3": 2, "cancel-4": 3})
    plane.kubectl("secadmin", "delete", "checkout", "cancel-1", "-n", NS)  # people may not delete theirs
    settle_positions(plane, {"cancel-3": 1, "cancel-4": 2})
    assert line_on_the_lease(plane, "cancel-0") == ["cancel-3", "cancel-4"]
    patch_spec(plane, "cancel-holder", "cancel-0", {"checkin": {"requested": True}})
    assert phase(plane, "cancel-3", "Active")["holder"] == "cancel-3-user"
    settle_positions(plane, {"cancel-4": 1})
    patch_spec(plane, "cancel-3-user", "cancel-3", {"checkin": {"requested": True}})
    phase(plane, "cancel-4", "Active")
    patch_spec(plane, "cancel-4-user", "cancel-4", {"checkin": {"requested": True}})
    phase(plane, "cancel-4", "CheckedIn")


def kubepam(plane: ControlPlane, who: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig(who))}
    return subprocess.Popen(
        [sys.executable, "-m", "kubepam", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_waits_in_line_and_claims(plane: ControlPlane, line: None) -> None:
    apply(
        plane,
        "alice",
        kubepam_object(
            "Checkout",
            "cli-alice",
            {"project": PROJECT, "account": CLI, "requester": "alice", "reason": "r"},
            NS,
        ),
    )
    phase(plane, "cli-alice", "Active")
    waiting = kubepam(
        plane,
        "bob",
        "checkout",
        CLI,
        "--project",
        PROJECT,
        "-n",
        NS,
        "--reason",
        "INC-9",
        "--wait",
        "--timeout",
        "90",
    )
    try:
        deadline = time.monotonic() + 60
        while not any(
            o["spec"]["requester"] == "bob" and (o.get("status") or {}).get("phase") == "Queued"
            for o in kubectl_json(plane, "admin", "get", "checkouts", "-n", NS)["items"]
        ):
            assert time.monotonic() < deadline and waiting.poll() is None, "bob's checkout never queued"
            time.sleep(0.2)
        apply(
            plane,
            "victor",
            kubepam_object(
                "Checkout",
                "cli-victor",
                {"project": PROJECT, "account": CLI, "requester": "victor", "reason": "r", "queue": True},
                NS,
            ),
        )
        assert phase(plane, "cli-victor", "Queued")["queue"]["position"] == 2
        listing = kubepam(plane, "alice", "checkouts", "-n", NS)
        out, _ = listing.communicate(timeout=60)
        assert column(out, "cli-victor", "POSITION") == "2", out
        plane.kubectl(
            "alice",
            "patch",
            "checkout",
            "cli-alice",
            "-n",
            NS,
            "--type=merge",
            "-p",
            '{"spec":{"checkin":{"requested":true}}}',
        )
        out, err = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert "#1 in line" in err and f"{CLI} is yours until" in out
    name = out.split(":")[0]
    back = kubepam(plane, "bob", "checkin", name, "-n", NS)
    assert back.wait(timeout=60) == 0
    phase(plane, "cli-victor", "Offered")
    claim = kubepam(plane, "victor", "checkout", "claim", "cli-victor", "-n", NS)
    assert claim.wait(timeout=60) == 0
    assert phase(plane, "cli-victor", "Active")["holder"] == "victor"
    plane.kubectl(
        "victor",
        "patch",
        "checkout",
        "cli-victor",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec":{"checkin":{"requested":true}}}',
    )
    phase(plane, "cli-victor", "CheckedIn")
