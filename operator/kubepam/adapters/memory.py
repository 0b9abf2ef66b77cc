"""The process's own memory, kept close to what it really holds (glibc's malloc; a no-op elsewhere).

What bench/scale.py found: at 1,000 objects the operator's live Python objects grow by ~3 KiB per
object, but its RSS by ~60 KiB. The rest is memory freed after a burst and kept by the allocators:
glibc keeps freed chunks in up to 8 arenas per core (one per thread that allocated at once; the
Kubernetes client's thread pool touches many), and it returns a freed page in the middle of a heap
only when asked (`malloc_trim`). So, as many long-running Python services do:

- `limit_arenas(n)`: at start-up, before the thread pools exist, cap the arenas (M_ARENA_MAX), the
  same as the MALLOC_ARENA_MAX environment variable;
- `trim()`: hand freed pages back to the kernel; `trim_every` does it periodically (in a thread: it
  takes the arenas' locks for a few milliseconds, never the event loop).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from functools import cache

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)

log = logging.getLogger("kubepam.memory")


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (0 leaves glibc's default). True if the allocator took it."""
    libc = _libc()
    if libc is None or arenas <= 0:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return the pages malloc holds free to the kernel. True if some were returned."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def trim_every(seconds: float) -> None:
    """Trim every ``seconds`` until cancelled (0 or less: never)."""
    if seconds <= 0 or _libc() is None:
        return
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(trim)
        except Exception as exc:  # never fatal: it is housekeeping
            log.warning("malloc_trim failed: %s", exc)
