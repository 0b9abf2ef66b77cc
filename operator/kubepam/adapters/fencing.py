"""The fence: work done on behalf of the leader (kopf's control handlers, the deadline scheduler) runs
with a check bound in its context; every Kubernetes and PostgreSQL call made in that context first asks
it, so nothing is written after the leader stopped leading. The broker runs outside that context and
is never fenced (every replica serves it)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable

_FENCE: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "kubepam_fence", default=None
)


class Fenced(RuntimeError):
    """This replica stopped leading: the call was not made."""


def bind(is_leading: Callable[[], bool]) -> contextvars.Token[Callable[[], bool] | None]:
    """Tasks created after this (in this context) carry the fence."""
    return _FENCE.set(is_leading)


def unbind(token: contextvars.Token[Callable[[], bool] | None]) -> None:
    _FENCE.reset(token)


def is_fenced() -> bool:
    """Is this context doing the leader's work?"""
    return _FENCE.get() is not None


def current() -> Callable[[], bool] | None:
    """The fence bound in this context, if any (to carry it, and nothing else, into later work)."""
    return _FENCE.get()


def check() -> None:
    fence = _FENCE.get()
    if fence is not None and not fence():
        raise Fenced("this replica is no longer the leader; the write was not made")
