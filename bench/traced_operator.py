"""`kubepam run` (or, given a script, that script: e.g. bench/empty_operator.py) instrumented for
bench/scale.py, writing into $KUBEPAM_TRACEMALLOC_DIR:

- with $KUBEPAM_TRACEMALLOC_FRAMES > 0 (default 12), tracemalloc is on and SIGUSR1 writes a snapshot
  (after a full GC) to snap-<n>.pickle, so the benchmark can diff what each operator holds at 1,000 and
  at 5,000 objects. Tracing roughly doubles the process's memory and slows every allocation.
- SIGUSR2 writes probe-<n>.json: RSS, what Python's allocator and glibc's malloc hold (in use / free),
  then RSS again after gc + malloc_trim(0), i.e. how much of the RSS is memory freed but not returned.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

# $KUBEPAM_SOURCE: run the operator from another copy of the package (to measure a change side by side)
sys.path.insert(0, os.environ.get("KUBEPAM_SOURCE") or str(Path(__file__).resolve().parents[1] / "operator"))

OUT = Path(os.environ["KUBEPAM_TRACEMALLOC_DIR"])
FRAMES = int(os.environ.get("KUBEPAM_TRACEMALLOC_FRAMES", "12"))


def _publish(prefix: str, suffix: str, write: object) -> None:
    n = len(list(OUT.glob(f"{prefix}-*{suffix}")))
    tmp = OUT / f".{prefix}-{n}.tmp"
    write(tmp)  # type: ignore[operator]
    tmp.rename(OUT / f"{prefix}-{n}{suffix}")  # appears whole: the benchmark waits for this name


def dump(_signum: int, _frame: FrameType | None) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    _publish("snap", ".pickle", lambda path: snapshot.dump(str(path)))


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _is_socket(fd: Path) -> bool:
    try:
        return str(fd.readlink()).startswith("socket:")
    except OSError:
        return False


def _pymalloc() -> dict[str, int]:
    """Python's small-object allocator: arena bytes mapped, and bytes in live blocks (its own report)."""
    report = OUT / ".pymalloc.txt"
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    found: dict[str, int] = {}
    for line in report.read_text().splitlines():
        label, _, value = line.partition("=")
        if "bytes/arena" in label:
            found["pymalloc_arenas_kib"] = int(value.replace(",", "")) // 1024
        elif label.strip() == "# bytes in allocated blocks":
            found["pymalloc_live_kib"] = int(value.replace(",", "")) // 1024
    return found


def probe(_signum: int, _frame: FrameType | None) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    gc.collect()
    before, info, small = _rss_kib(), libc.mallinfo2(), _pymalloc()
    libc.malloc_trim(0)
    result = {
        "rss_kib": before,
        "python_blocks": sys.getallocatedblocks(),
        **small,
        "malloc_in_use_kib": info.uordblks // 1024,
        "malloc_free_kib": info.fordblks // 1024,
        "malloc_mmapped_kib": info.hblkhd // 1024,
        "rss_after_trim_kib": _rss_kib(),
        "threads": len(list(Path("/proc/self/task").iterdir())),
        "sockets": sum(1 for fd in Path("/proc/self/fd").iterdir() if _is_socket(fd)),
    }
    _publish("probe", ".json", lambda path: path.write_text(json.dumps(result)))


if __name__ == "__main__":
    # Import first, then trace: tracing makes imports ~20x slower, and only what the objects bring counts.
    import kopf  # noqa: F401

    if len(sys.argv) == 1:
        import kubernetes

        import kubepam.handlers  # noqa: F401

        for api in (
            "CoreV1Api",
            "RbacAuthorizationV1Api",
            "CoordinationV1Api",
            "EventsV1Api",
            "CustomObjectsApi",
        ):
            getattr(kubernetes.client, api)  # the client imports these lazily
    if FRAMES > 0:
        tracemalloc.start(FRAMES)
        signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, probe)
    if len(sys.argv) > 1:
        script = sys.argv[1]
        sys.argv = sys.argv[1:]
        runpy.run_path(script, run_name="__main__")
    else:
        from kubepam.cli import main

        sys.exit(main(["run"]))
