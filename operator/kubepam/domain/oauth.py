"""RFC 6749 / RFC 8693 error vocabulary for the broker, and the outcome label of each refusal.

Every refusal carries a specific ``error_description`` that never repeats the token itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GRANT_TYPE_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


@dataclass(frozen=True)
class OAuthError(Exception):
    """A refusal: ``error`` (RFC 6749 code), HTTP status, a specific description, a metric outcome."""

    error: str
    description: str
    status: int
    outcome: str

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def invalid_request(description: str, outcome: str = "invalid_request") -> OAuthError:
    return OAuthError("invalid_request", description, 400, outcome)


def invalid_grant(description: str, outcome: str) -> OAuthError:
    return OAuthError("invalid_grant", description, 400, outcome)


def invalid_client(description: str, outcome: str = "unknown_connection") -> OAuthError:
    return OAuthError("invalid_client", description, 401, outcome)


def unauthorized_client(description: str, outcome: str) -> OAuthError:
    return OAuthError("unauthorized_client", description, 403, outcome)


def access_denied(description: str, outcome: str) -> OAuthError:
    return OAuthError("access_denied", description, 403, outcome)


def invalid_token(description: str, outcome: str) -> OAuthError:
    """RFC 6750 bearer-token error for the broker's authenticated endpoints."""
    return OAuthError("invalid_token", description, 401, outcome)


def temporarily_unavailable(description: str, outcome: str = "unavailable") -> OAuthError:
    return OAuthError("temporarily_unavailable", description, 503, outcome)


def not_found(description: str, outcome: str = "not_found") -> OAuthError:
    """A broker resource (a workload's checkout) that does not exist for this caller; the same answer
    whether it is missing or someone else's, so its existence is not revealed."""
    return OAuthError("not_found", description, 404, outcome)
