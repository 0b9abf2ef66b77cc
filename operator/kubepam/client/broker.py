"""Calls to the kubepam broker: token exchange and validation (RFC 8693 form posts), and a workload's
checkouts of shared accounts (JSON with the kubepam access token as Bearer)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class BrokerError(Exception):
    def __init__(self, status: int, error: str, description: str, body: dict[str, Any] | None = None) -> None:
        self.status, self.error, self.description = status, error, description
        self.body = body or {}  # the whole error answer (a 503 for a checkout names it)
        super().__init__(f"{error}: {description} (HTTP {status})")


def post_form(broker: str, path: str, fields: dict[str, str], timeout: float = 15) -> dict[str, Any]:
    data = urllib.parse.urlencode(fields).encode()
    return _send(broker, path, "POST", data, "application/x-www-form-urlencoded", None, timeout)


def send_json(
    broker: str,
    method: str,
    path: str,
    access_token: str,
    body: dict[str, Any] | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    """A JSON call with the kubepam access token as Bearer (POST, GET or DELETE)."""
    data = json.dumps(body).encode() if body is not None else None
    return _send(broker, path, method, data, "application/json", access_token, timeout)


def _send(
    broker: str,
    path: str,
    method: str,
    data: bytes | None,
    content_type: str,
    bearer: str | None,
    timeout: float,
) -> dict[str, Any]:
    if not broker.startswith(("https://", "http://")):
        raise BrokerError(0, "invalid_request", f"broker URL must be http(s), got {broker!r}")
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = content_type
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        broker.rstrip("/") + path, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        raise BrokerError(
            exc.code, body.get("error", "http_error"), body.get("error_description", exc.reason), body
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise BrokerError(0, "unreachable", f"{broker}: {exc}") from None


def exchange_fields(connection: str, subject_token: str) -> dict[str, str]:
    return {
        "grant_type": GRANT,
        "subject_token": subject_token,
        "subject_token_type": JWT_TYPE,
        "connection": connection,
    }


def exchange(broker: str, connection: str, subject_token: str) -> dict[str, Any]:
    return post_form(broker, "/v1/token", exchange_fields(connection, subject_token))


def validate(broker: str, connection: str, subject_token: str) -> dict[str, Any]:
    return post_form(broker, "/v1/token/validate", exchange_fields(connection, subject_token))


def render_report(report: dict[str, Any]) -> str:
    mark = {True: "+", False: "-"}
    lines = [f"connection {report['connection']} ({report['phase']}): token {report['verdict']}"]
    if report.get("error"):
        lines.append(f"  {report['error']['error']}: {report['error']['error_description']}")
    if report.get("trace"):
        lines.append("  connection conditions:")
        lines += [
            f"    {mark[r['matched']]} {r['claim']} {r['operator']} {r['expected']}  "
            f"(token: {r['actual']}; {r['reason']})"
            for r in report["trace"]
        ]
    for role in report.get("roles", []):
        lines.append(
            f"  role {role['role']}: {'MATCH' if role['matched'] else 'no match'} - {role['reason']}"
        )
        for i, block in enumerate(role["blocks"]):
            lines.append(f"    block {i}:")
            lines += [
                f"      {mark[r['matched']]} {r['claim']} {r['operator']} {r['expected']}  "
                f"(token: {r['actual']})"
                for r in block
            ]
    if report.get("note"):
        lines.append(f"  note: {report['note']}")
    lines.append(f"  would issue: {'yes' if report.get('wouldIssue') else 'no'}")
    return "\n".join(lines)


def checkout(
    broker: str,
    access_token: str,
    *,
    role: str,
    project: str,
    account: str,
    reason: str,
    duration: str | None = None,
    timeout: float = 300,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Check out a shared account as a workload: the answer carries the credential (given this once).
    While the operator has not decided (approvers are asked), ask again for the credential of the same
    checkout until ``timeout`` seconds have passed."""
    body: dict[str, Any] = {"role": role, "project": project, "account": account, "reason": reason}
    if duration:
        body["duration"] = duration
    deadline = time.monotonic() + timeout
    try:
        return send_json(broker, "POST", "/v1/checkouts", access_token, body)
    except BrokerError as exc:
        if exc.status != 503 or not exc.body.get("checkout"):
            raise
        pending = exc
    path = f"/v1/checkouts/{pending.body['namespace']}/{pending.body['checkout']}/credential"
    while True:
        if progress is not None:
            progress(pending.description)
        if time.monotonic() >= deadline:
            raise pending
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        try:
            return send_json(broker, "POST", path, access_token)
        except BrokerError as exc:
            if exc.status != 503 or not exc.body.get("checkout"):
                raise
            pending = exc


def checkin(broker: str, access_token: str, namespace: str, name: str) -> dict[str, Any]:
    return send_json(broker, "DELETE", f"/v1/checkouts/{namespace}/{name}", access_token)
