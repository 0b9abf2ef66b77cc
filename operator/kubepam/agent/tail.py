"""Follows a log file (auth.log) the way `tail -F` does: from the end on first sight, surviving
rotation (a new inode: the rest of the old file is read, then the new one from its start) and
truncation (back to the start), with bounded reads (at most `max_read` bytes a poll; a line longer
than `max_line` is dropped whole, never cut into something else). The position can be saved and
restored, so a restarted agent neither misses nor repeats."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass
class Position:
    inode: int
    offset: int


class Follower:
    def __init__(
        self,
        path: Path,
        position: Position | None = None,
        max_read: int = 1 << 20,
        max_line: int = 16384,
    ) -> None:
        self.path = path
        self.max_read, self.max_line = max_read, max_line
        self._file: BinaryIO | None = None
        self._inode = -1
        self._partial = b""
        self._skipping = False  # inside an over-long line: drop until its newline
        self._skip_from = 0  # where that line started
        self._resume = position
        self._missing = False

    @property
    def position(self) -> Position | None:
        if self._file is None:
            return None
        if self._skipping:  # inside an over-long line: a restart reads (and drops) it again from its start
            return Position(self._inode, self._skip_from)
        return Position(self._inode, self._file.tell() - len(self._partial))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, at_end: bool) -> bool:
        try:
            f = self.path.open("rb")
        except OSError:
            return False
        inode = os.fstat(f.fileno()).st_ino
        resume, self._resume = self._resume, None
        if resume is not None and resume.inode == inode and resume.offset <= os.fstat(f.fileno()).st_size:
            f.seek(resume.offset)
        elif resume is not None:
            f.seek(0)  # the file we read before was rotated away: everything here is new
        elif at_end:
            f.seek(0, os.SEEK_END)
        self.close()
        self._file, self._inode = f, inode
        self._partial, self._skipping = b"", False
        return True

    def poll(self) -> list[str]:
        """The complete lines written since the last poll."""
        if self._file is None and not self._open(at_end=not self._missing):
            self._missing = True  # it appears later: read it from its start
            return []
        assert self._file is not None
        lines = self._read()
        try:
            st = self.path.stat()
        except OSError:
            return lines  # rotated and not yet recreated: keep reading the old file
        if st.st_ino != self._inode:
            lines += self._read()  # the rest of the rotated file
            if self._open(at_end=False):
                lines += self._read()
        elif st.st_size < self._file.tell():  # truncated in place
            self._file.seek(0)
            self._partial, self._skipping = b"", False
            lines += self._read()
        return lines

    def _read(self) -> list[str]:
        assert self._file is not None
        data = self._file.read(self.max_read)
        if not data:
            return []
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        out: list[str] = []
        for chunk in chunks:
            if self._skipping:  # the end of an over-long line
                self._skipping = False
            elif len(chunk) <= self.max_line:  # an over-long line is dropped whole, never cut
                out.append(chunk.decode("utf-8", errors="replace"))
        if len(self._partial) > self.max_line:
            if not self._skipping:
                self._skip_from = self._file.tell() - len(self._partial)
            self._partial, self._skipping = b"", True
        return out


def load_position(raw: object) -> Position | None:
    with contextlib.suppress(KeyError, TypeError, ValueError):
        if isinstance(raw, dict):
            return Position(int(raw["inode"]), int(raw["offset"]))
    return None
