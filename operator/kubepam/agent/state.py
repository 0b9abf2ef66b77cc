"""The agent's record of the accounts it created, as JSON in the state directory, written atomically so
a restart (or a crash) never forgets what it created: the record is what lets it delete an account
later, and what makes it refuse every account it did not create."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from kubepam.agent.files import write_atomic
from kubepam.agent.plan import Managed

VERSION = 1


class StateError(Exception):
    pass


def load_record(path: Path) -> dict[str, Managed]:
    """The record (empty if there is none yet); a record that cannot be read stops the agent rather than
    letting it start from nothing and forget accounts it must clean up."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable record of managed accounts: {exc}") from None
    if (
        not isinstance(raw, dict)
        or raw.get("version") != VERSION
        or not isinstance(raw.get("accounts"), dict)
    ):
        raise StateError(f"{path}: not a version {VERSION} record of managed accounts")
    record: dict[str, Managed] = {}
    try:
        for name, entry in raw["accounts"].items():
            removed = entry.get("removedAt")
            record[name] = Managed(
                uid=int(entry["uid"]),
                principals=tuple(str(p) for p in entry.get("principals", [])),
                sudo=entry.get("sudo") is True,
                removed_at=datetime.fromisoformat(removed) if removed else None,
                synced=entry.get("synced", True) is not False,
            )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateError(f"{path}: bad entry in the record of managed accounts: {exc}") from None
    return record


def dump_record(record: dict[str, Managed]) -> dict[str, Any]:
    return {
        "version": VERSION,
        "accounts": {
            name: {
                "uid": m.uid,
                "principals": list(m.principals),
                "sudo": m.sudo,
                "removedAt": m.removed_at.isoformat() if m.removed_at else None,
                "synced": m.synced,
            }
            for name, m in sorted(record.items())
        },
    }


def save_record(path: Path, record: dict[str, Managed]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(dump_record(record), indent=1) + "\n", mode=0o600)
