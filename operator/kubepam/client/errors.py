"""What the CLI prints when the API server refuses: its own sentence (the Status message, e.g. the
admission policy's reason), never the raw JSON body or a traceback."""

from __future__ import annotations

import json
from typing import Any


def api_message(exc: Any) -> str:
    """The API server's message from a kubernetes ApiException (or anything with a Status body)."""
    body = getattr(exc, "body", None)
    try:
        status = json.loads(body) if body else {}
    except (TypeError, ValueError):
        status = {}
    message = status.get("message") if isinstance(status, dict) else None
    return str(message or body or getattr(exc, "reason", None) or exc)
