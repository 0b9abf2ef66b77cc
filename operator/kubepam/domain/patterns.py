"""Linear-time pattern matching for claim conditions: globs and regular expressions.

Both compile to RE2 (google-re2), which runs in time linear in the input and refuses backreferences
and lookaround, so a hostile token or a careless pattern cannot make matching slow. Inputs and
patterns are length-bounded on top of that.

Glob syntax (deliberately small and documented): ``*`` matches any run of characters except ``/``,
``**`` matches any run including ``/``, ``?`` matches one character except ``/``; every other
character, ``[`` and ``]`` included, is literal. So ``refs/tags/v*`` matches ``refs/tags/v1-rc`` but
not ``refs/tags/v1/rc``, and ``refs/heads/**`` matches every branch.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol, cast

import re2

MAX_PATTERN_LENGTH = 512
MAX_SUBJECT_LENGTH = 4096


class Matcher(Protocol):
    def fullmatch(self, text: str) -> Any: ...


class PatternError(ValueError):
    """A glob or regex that cannot be used; the message says why."""


def _compile(expression: str) -> Matcher:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20
    try:
        return cast(Matcher, re2.compile(expression, options))
    except re2.error as exc:  # RE2 rejects backreferences, lookaround and other non-linear syntax.
        raise PatternError(f"not a valid RE2 expression: {exc}") from None


@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> Matcher:
    """Compile a user regex for full-match use; raises PatternError with the reason."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    return _compile(pattern)


def glob_to_regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re2.escape(char))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Matcher:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    return _compile(glob_to_regex(pattern))


def is_wildcard_only(glob: str) -> bool:
    """True when a glob has no literal character, so it cannot bind anything."""
    return all(ch in "*?" for ch in glob)
