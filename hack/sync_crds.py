#!/usr/bin/env python3
"""Copy crds/ (the source of truth) into manifests/10-crds.yaml and charts/kubepam/crds/.

Run after editing a CRD; `tests/unit/test_manifests.py` fails while the copies differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Generated from crds/ by hack/sync_crds.py. Edit crds/, not this file.\n"


def rendered() -> dict[Path, str]:
    sources = sorted((ROOT / "crds").glob("*.yaml"))
    out = {
        ROOT / "manifests" / "10-crds.yaml": HEADER
        + "".join("---\n" + src.read_text().rstrip("\n") + "\n" for src in sources)
    }
    for src in sources:
        out[ROOT / "charts" / "kubepam" / "crds" / src.name] = HEADER + src.read_text()
    return out


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for path, text in rendered().items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if check and stale:
        print("out of date (run hack/sync_crds.py):", *map(str, stale), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
