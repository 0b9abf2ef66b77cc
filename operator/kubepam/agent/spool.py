"""Login events the broker did not take, kept in `<state-dir>/spool/`: one JSON file per batch, named so
that they sort oldest first, at most `limit` files (beyond it the oldest batch is dropped, logged), and
sent oldest first when the broker answers again."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubepam.agent.files import write_atomic

log = logging.getLogger("kubepam.agent.spool")


class Spool:
    def __init__(self, directory: Path, limit: int = 1000) -> None:
        self.dir = directory
        self.limit = limit
        self._seq = 0

    def files(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def put(self, events: list[dict[str, Any]]) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seq += 1
        path = self.dir / f"{time.time_ns():020d}-{self._seq:06d}.json"
        write_atomic(path, json.dumps({"events": events}), mode=0o600)
        files = self.files()
        for old in files[: max(0, len(files) - self.limit)]:
            log.warning("spool full (%d batches): dropping the oldest, %s", self.limit, old.name)
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path

    def load(self, path: Path) -> list[dict[str, Any]] | None:
        try:
            raw = json.loads(path.read_text())
            events = raw["events"]
            if isinstance(events, list) and all(isinstance(e, dict) for e in events):
                return events
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    async def flush(self, send: Callable[[list[dict[str, Any]]], Awaitable[object]]) -> int:
        """Send the spooled batches oldest first; stop at the first failure (it raises). The count sent."""
        sent = 0
        for path in self.files():
            events = self.load(path)
            if events is None:
                log.warning("dropping unreadable spooled batch %s", path.name)
            else:
                await send(events)
                sent += 1
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return sent
