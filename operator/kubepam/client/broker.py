"""Calls to the kubepam broker: token exchange and validation (RFC 8693 form posts)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class BrokerError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        self.status, self.error, self.description = status, error, description
        super().__init__(f"{error}: {description} (HTTP {status})")


def post_form(broker: str, path: str, fields: dict[str, str], timeout: float = 15) -> dict[str, Any]:
    if not broker.startswith(("https://", "http://")):
        raise BrokerError(0, "invalid_request", f"broker URL must be http(s), got {broker!r}")
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        broker.rstrip("/") + path,
        data=data,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
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
        raise BrokerError(
            exc.code, body.get("error", "http_error"), body.get("error_description", exc.reason)
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
