"""The domain stays pure beyond what import-linter checks: no clock reads and no environment reads."""

from __future__ import annotations

import re
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "operator" / "kubepam" / "domain"
FORBIDDEN = [
    r"\.now\(",
    r"\.utcnow\(",
    r"\btime\.time\(",
    r"\btime\.monotonic\(",
    r"\bos\.environ",
    r"\bopen\(",
]


def test_domain_never_reads_the_clock_or_the_environment() -> None:
    offenders = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(DOMAIN.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(re.search(pattern, line) for pattern in FORBIDDEN)
    ]
    assert offenders == []


def test_every_module_says_what_it_is_for() -> None:
    package = DOMAIN.parent
    missing = [
        str(p.relative_to(package))
        for p in sorted(package.rglob("*.py"))
        if not p.read_text().lstrip().startswith('"""')
    ]
    assert missing == []
