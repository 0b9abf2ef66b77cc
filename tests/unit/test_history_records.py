"""AccessRecords from finished objects (domain/records.py) and the history rows built from them
(domain/history.py): one record per outcome, names that are the same on every retry, labels that are
valid, nothing secret copied, and the same rows for the console and `kubepam history`."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubepam.client import history as client_history
from kubepam.domain import history, records

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
READY, EXPIRES = "2026-03-01T09:10:00Z", "2026-03-01T09:30:05Z"
SECRET_FIELDS = {"secretName", "certificate", "publicKey", "csr", "password", "credential"}
SECRET_VALUES = ("db-admin-x1-credential", "bob-jit-pw", "AAAA", "BEGIN", "cert-v01")
_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def checkout(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "db-admin-x1",
            "namespace": "team-a",
            "uid": "u-1",
            "creationTimestamp": "2026-03-01T09:00:00Z",
        },
        "spec": {
            "project": "payments",
            "account": "db_admin",
            "requester": "alice@example.com",
            "groups": ["kubepam:users"],
            "reason": "INC-1 fix the index",
        },
        "status": {
            "phase": phase,
            "grantedAt": "2026-03-01T09:00:05Z",
            "expiresAt": "2026-03-01T09:30:05Z",
            "secretName": "db-admin-x1-credential",
            "conditions": [{"type": "Ready", "lastTransitionTime": "2026-03-01T09:10:00Z"}],
            **status,
        },
    }


def jit(phase: str, history_: list[dict[str, Any]], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "bob", "namespace": "team-a", "uid": "u-j"},
        "spec": {"project": "payments", "owner": "bob", "groups": ["edit"], "reason": "x"},
        "status": {
            "phase": phase,
            "accountName": "bob_jit",
            "secretName": "bob-jit-pw",
            "history": history_,
            **status,
        },
    }


WINDOW_1 = {
    "by": "bob",
    "reason": "CHG-1",
    "groups": ["edit"],
    "from": "2026-03-01T08:00:00Z",
    "until": "2026-03-01T09:00:00Z",
}
WINDOW_2 = {
    "by": "bob",
    "reason": "CHG-2",
    "groups": ["edit"],
    "from": "2026-03-01T10:00:00Z",
    "until": "2026-03-01T11:00:00Z",
}


def cert(kind: str, phase: str) -> dict[str, Any]:
    meta = {
        "name": "alice-1",
        "namespace": "team-a",
        "uid": "u-c",
        "creationTimestamp": "2026-03-01T11:00:00Z",
    }
    spec = {"project": "payments", "server": "web-1", "requester": "alice"}
    spec |= {"publicKey": "ssh-ed25519 AAAA", "csr": "-----BEGIN CERTIFICATE REQUEST-----"}
    status = {"phase": phase, "certificate": "ssh-ed25519-cert-v01@openssh.com AAAA", "principals": ["alice"]}
    status |= {"serial": "42", "validAfter": "2026-03-01T11:00:01Z", "validBefore": "2026-03-01T11:03:01Z"}
    status |= {"reason": "no policy allows alice" if phase == "Denied" else ""}
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("phase", "extra", "outcome", "finished", "detail"),
    [
        ("CheckedIn", {"checkinReason": "CheckedIn"}, "CheckedIn", READY, "CheckedIn"),
        ("Expired", {"checkinReason": "Expired"}, "Expired", EXPIRES, f"until {EXPIRES}"),
        ("Denied", {"message": "the account is held by bob"}, "Denied", READY, "held by bob"),
        ("Cancelled", {}, "Cancelled", READY, "left the waiting line"),
    ],
)  # fmt: skip
def test_a_checkout_in_a_final_phase_has_one_record(
    phase: str, extra: dict[str, Any], outcome: str, finished: str, detail: str
) -> None:
    record = records.checkout_record(checkout(phase, **extra), NOW)
    assert record is not None
    assert (record.kind, record.outcome, record.finished_at) == ("checkout", outcome, finished)
    assert record.time == "2026-03-01T09:00:05Z" and record.who == "alice@example.com"
    assert (record.project, record.account, record.namespace) == ("payments", "db_admin", "team-a")
    assert detail in record.detail and record.reason == "INC-1 fix the index"


@pytest.mark.parametrize("phase", ["Pending", "Active", "CheckinInProgress", "Queued", "Offered"])
def test_a_checkout_still_going_on_has_no_record(phase: str) -> None:
    assert records.checkout_record(checkout(phase), NOW) is None


def test_a_granted_checkout_deleted_while_active_is_recorded_as_deleted() -> None:
    record = records.checkout_record(checkout("Active"), NOW, deleted=True)
    assert record is not None and record.outcome == "Deleted" and record.finished_at == "2026-03-01T12:00:00Z"
    pending = checkout("Pending")
    del pending["status"]["grantedAt"]
    assert records.checkout_record(pending, NOW, deleted=True) is None  # nothing happened


def test_votes_break_glass_and_elevation_are_in_the_checkout_record() -> None:
    obj = checkout(
        "CheckedIn",
        elevation={"state": "REMOVED"},
        breakGlass={"used": True, "target": "Elevation"},
        approvals=[
            {"request": "elevation-1", "approver": "carol", "decision": "Denied", "comment": "not now"},
            {"request": "elevation-2", "approver": "dave", "decision": "Approved"},
            {"request": "", "approver": "mallory", "decision": "Approved"},  # not stamped: skipped
        ],
    )
    record = records.checkout_record(obj, NOW)
    assert record is not None and record.break_glass and record.elevation == "REMOVED"
    spec = record.spec()
    assert spec["approvers"] == [
        {"approver": "carol", "request": "elevation-1", "decision": "Denied", "comment": "not now"},
        {"approver": "dave", "request": "elevation-2", "decision": "Approved", "comment": ""},
    ]
    assert "Denied by carol" in spec["detail"] and "break-glass (elevation)" in spec["detail"]


@pytest.mark.parametrize(
    ("phase", "status", "deleted", "expected"),
    [
        ("Active", {}, False, []),  # the only window is open
        ("Disabled", {"expiresAt": "2026-03-01T09:00:00Z"}, False, [("Expired", "2026-03-01T09:00:00Z")]),
        ("Active", {}, True, [("Deleted", "2026-03-01T12:00:00Z")]),
    ],
)
def test_a_jit_activation_is_recorded_when_it_ends(
    phase: str, status: dict[str, Any], deleted: bool, expected: list[tuple[str, str]]
) -> None:
    window = {**WINDOW_1, "until": "2026-03-01T13:00:00Z"} if phase == "Active" else WINDOW_1
    found = records.jit_records(jit(phase, [window], **status), NOW, deleted=deleted)
    assert [(r.outcome, r.finished_at) for r in found] == expected
    for r in found:
        assert (r.kind, r.account, r.who, r.reason, r.groups) == ("jit", "bob_jit", "bob", "CHG-1", ("edit",))


def test_a_window_replaced_before_its_end_is_superseded_when_the_next_began() -> None:
    early_next = {**WINDOW_2, "from": "2026-03-01T08:30:00Z"}
    (record,) = records.jit_records(jit("Active", [WINDOW_1, early_next]), NOW)
    assert (record.outcome, record.finished_at) == ("Superseded", "2026-03-01T08:30:00Z")


def test_a_jit_record_is_the_owners_and_says_who_enabled_it() -> None:
    (record,) = records.jit_records(jit("Disabled", [{**WINDOW_1, "by": "secadmin"}]), NOW)
    assert record.who == "bob" and "enabled by secadmin" in record.detail


def test_earlier_windows_are_ended_and_an_early_disable_says_so() -> None:
    active = records.jit_records(jit("Active", [WINDOW_1, WINDOW_2]), NOW)
    assert [(r.time, r.outcome) for r in active] == [("2026-03-01T08:00:00Z", "Expired")]
    early = jit("Disabled", [WINDOW_1, WINDOW_2], expiresAt="2026-03-01T10:20:00Z")
    early["spec"]["disabled"] = True
    found = records.jit_records(early, NOW)
    assert [(r.outcome, r.finished_at) for r in found] == [
        ("Expired", "2026-03-01T09:00:00Z"),
        ("Disabled", "2026-03-01T10:20:00Z"),
    ]
    assert len({r.name for r in found}) == 2


@pytest.mark.parametrize("kind", ["SSHCertificateRequest", "X509CertificateRequest"])
@pytest.mark.parametrize("phase", ["Issued", "Denied"])
def test_a_decided_certificate_request_has_one_record(kind: str, phase: str) -> None:
    record = records.certificate_record(kind, cert(kind, phase), NOW)
    assert record is not None and record.outcome == phase and record.server == "web-1"
    assert record.source_kind == kind and record.kind == "certificate"
    if phase == "Issued":
        assert "serial 42" in record.detail and "valid 2026-03-01T11:00:01Z" in record.detail
        assert (record.time, record.finished_at) == ("2026-03-01T11:00:00Z", "2026-03-01T11:03:01Z")
    else:
        assert "no policy allows alice" in record.detail
    assert records.certificate_record(kind, {**cert(kind, phase), "status": {}}, NOW) is None


def test_names_are_the_same_on_every_retry_and_differ_per_source_and_window() -> None:
    a = records.checkout_record(checkout("CheckedIn"), NOW)
    b = records.checkout_record(checkout("CheckedIn"), NOW + timedelta(hours=5))
    assert a is not None and b is not None and a.name == b.name
    assert a.name.startswith("checkout-db-admin-x1-")
    other = checkout("CheckedIn")
    other["metadata"]["uid"] = "u-2"
    assert records.checkout_record(other, NOW).name != a.name  # type: ignore[union-attr]
    w1, w2 = (records.jit_records(jit("Disabled", [w]), NOW)[0].name for w in (WINDOW_1, WINDOW_2))
    assert w1 != w2
    long = records.record_name("checkout", "x" * 253, "u")
    assert len(long) <= 253 and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", long)


@pytest.mark.parametrize(
    ("who", "readable"),
    [
        ("alice", True),
        ("alice@example.com", False),
        ("oidc:carol", False),
        ("a" * 64, False),
        ("x.y_z-1", True),
    ],
)
def test_person_labels_are_valid_label_values(who: str, readable: bool) -> None:
    value = records.label_value(who)
    assert _LABEL.match(value) and len(value) <= 63
    assert (value == who) is readable
    assert records.label_value(who) == value  # the CLI selects with the same function


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_no_secret_name_credential_or_certificate_is_ever_copied() -> None:
    made = [
        records.checkout_record(checkout("CheckedIn"), NOW),
        *records.jit_records(jit("Disabled", [WINDOW_1]), NOW),
        records.certificate_record("SSHCertificateRequest", cert("SSHCertificateRequest", "Issued"), NOW),
        records.certificate_record("X509CertificateRequest", cert("X509CertificateRequest", "Issued"), NOW),
    ]
    for record in made:
        assert record is not None
        text = json.dumps(record.manifest())
        assert not SECRET_FIELDS & set(_keys(record.manifest())), text
        assert not [v for v in SECRET_VALUES if v in text], text


def test_reason_and_detail_are_bounded() -> None:
    obj = checkout("CheckedIn")
    obj["spec"]["reason"] = "r" * 5000
    spec = records.checkout_record(obj, NOW).spec()  # type: ignore[union-attr]
    assert len(spec["reason"]) == records.REASON_MAX and len(spec["detail"]) <= records.DETAIL_MAX


def test_the_manifest_is_labelled_for_the_operator_and_for_selection() -> None:
    manifest = records.checkout_record(checkout("Expired"), NOW).manifest()  # type: ignore[union-attr]
    assert manifest["kind"] == "AccessRecord" and manifest["apiVersion"] == "kubepam.io/v1alpha1"
    labels = manifest["metadata"]["labels"]
    assert (
        labels["app.kubernetes.io/managed-by"] == "kubepam" and labels["kubepam.io/record-kind"] == "checkout"
    )
    assert labels["kubepam.io/person"] == records.label_value("alice@example.com")
    assert labels["kubepam.io/project"] == "payments"
    assert records.owned(manifest)
    assert not records.owned({"metadata": {"labels": {"kubepam.io/record-kind": "checkout"}}})
    assert records.expires_at(manifest, timedelta(days=30)) == datetime(2026, 3, 31, 9, 30, 5, tzinfo=UTC)


def _records() -> list[dict[str, Any]]:
    made = [
        records.checkout_record(checkout("CheckedIn"), NOW),
        records.checkout_record(checkout("Denied", message="held"), NOW),
        *records.jit_records(jit("Disabled", [WINDOW_1]), NOW),
        records.certificate_record("SSHCertificateRequest", cert("SSHCertificateRequest", "Issued"), NOW),
    ]
    return [{**r.manifest(), "metadata": {**r.manifest()["metadata"]}} for r in made if r is not None]


def test_one_row_per_record_for_the_cli_and_the_console_alike() -> None:
    rows = history.history((), (), _records())
    assert sorted(r.kind for r in rows) == ["certificate", "checkout", "denied", "jit"]
    by_kind = {r.kind: r for r in rows}
    assert (
        by_kind["checkout"].detail.startswith("CheckedIn: ") and "reason: INC-1" in by_kind["checkout"].detail
    )
    assert by_kind["certificate"].account == "web-1"  # a certificate's server stands in the account column
    assert by_kind["jit"].account == "bob_jit" and by_kind["jit"].who == "bob"
    assert [r.time for r in rows] == sorted((r.time for r in rows), reverse=True)


def test_a_record_whose_object_is_still_listed_gives_way_to_its_live_rows() -> None:
    live_checkout = checkout("CheckedIn", checkinReason="CheckedIn")
    live_jit = jit("Disabled", [WINDOW_1])
    rows = history.history([live_checkout], [live_jit], _records())
    # live: the checkout's checkout and checkin rows, the JIT account's window; the records of both
    # objects (both checkout records share the live checkout's uid) are left out; the certificate's stays
    assert sorted(r.kind for r in rows) == ["certificate", "checkin", "checkout", "jit"]
    assert not any(r.detail.startswith(("CheckedIn:", "Expired:")) for r in rows)


def test_cli_filters_and_exports() -> None:
    found = _records()

    def lister(namespace: str | None, selector: str) -> list[dict[str, Any]]:
        assert "app.kubernetes.io/managed-by=kubepam" in selector
        return found

    assert [r.kind for r in client_history.rows(None, person="bob", lister=lister)] == ["jit"]
    assert {r.kind for r in client_history.rows(None, account="db_admin", lister=lister)} == {
        "checkout",
        "denied",
    }
    assert client_history.rows(None, project="nope", lister=lister) == []
    since = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert [r.kind for r in client_history.rows(None, since=since, lister=lister)] == ["certificate"]
    until = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert [r.kind for r in client_history.rows(None, until=until, lister=lister)] == ["jit"]
    rows = client_history.rows(None, lister=lister)
    table = list(csv.DictReader(io.StringIO(history.to_csv(rows))))
    assert tuple(table[0]) == history.FIELDS and len(table) == 4
    assert json.loads(history.to_json(rows))[0].keys() == set(history.FIELDS)


def test_cli_times_are_rfc3339_or_durations_ago() -> None:
    assert client_history.moment("24h", NOW) == NOW - timedelta(hours=24)
    assert client_history.moment("2026-02-01T00:00:00Z", NOW) == datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(client_history.HistoryError):
        client_history.moment("yesterday", NOW)
    with pytest.raises(client_history.HistoryError):
        client_history.moment("2026-02-01T00:00:00", NOW)
    assert "kubepam.io/person=" + records.label_value("a@b") in client_history.selector("a@b", "")


def test_kubepam_history_prints_csv_json_and_a_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubepam.cli import main

    asked: list[tuple[str | None, str]] = []

    def lister(namespace: str | None, selector: str) -> list[dict[str, Any]]:
        asked.append((namespace, selector))
        return _records()

    monkeypatch.setattr(client_history, "list_records", lister)
    assert main(["history", "-n", "team-a", "--csv", "--kind", "jit"]) == 0
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["kind"], r["who"], r["account"]) for r in out] == [("jit", "bob", "bob_jit")]
    assert main(["history", "-A", "-o", "json", "--person", "alice@example.com"]) == 0
    assert {r["kind"] for r in json.loads(capsys.readouterr().out)} == {"checkout", "denied"}
    assert asked[-1][0] is None and records.label_value("alice@example.com") in asked[-1][1]
    assert main(["history", "-n", "team-a"]) == 0
    assert capsys.readouterr().out.startswith("TIME")
    assert main(["history", "--since", "last tuesday"]) == 2
    assert "neither an RFC 3339 time nor a duration" in capsys.readouterr().err
