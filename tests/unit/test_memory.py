"""The allocator housekeeping: glibc takes the arena cap, a trim runs, and 'never' means never."""

from __future__ import annotations

import asyncio

import pytest

from kubepam.adapters import memory

glibc = pytest.mark.skipif(memory._libc() is None, reason="not glibc")


@glibc
def test_glibc_takes_an_arena_cap_and_a_trim() -> None:
    assert memory.limit_arenas(2) is True
    blocks = [bytearray(64 * 1024) for _ in range(200)]  # ~12 MiB, then freed: something to give back
    del blocks
    assert isinstance(memory.trim(), bool)


def test_a_cap_of_zero_leaves_the_default() -> None:
    assert memory.limit_arenas(0) is False


async def test_an_interval_of_zero_never_trims() -> None:
    await asyncio.wait_for(memory.trim_every(0), timeout=1)  # returns at once instead of looping


@glibc
async def test_trimming_runs_until_cancelled() -> None:
    task = asyncio.create_task(memory.trim_every(0.01))
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
