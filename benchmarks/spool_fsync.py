"""``python -m benchmarks.spool_fsync [--appends N] [--runs R] [--dir DIR]``: what fsync costs.

Appends records of 20 events of 400 bytes (one flush_at batch of typical
events) to a fresh spool under each fsync policy: never, every append, and at
most every 10, 50 and 200 ms. Prints, per policy, the median over the runs of
the wall time per append (µs), of appends per second, and of the fsyncs made
(counted through the spool's fsync hook). The spool goes in a temporary
directory (``--dir`` to measure another file system).

Not part of ``make bench``: its figures are quoted in ``trubrics_mp/_spool.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Optional

from trubrics_mp._spool import Spool
from trubrics_mp._spool_dir import Hooks

EVENT = b'{"event":"Sign up","user_id":"u-1","properties":{"plan":"pro","pad":"' + b"x" * 330
EVENT += b'"}}'
EVENTS = [EVENT[:400]] * 20
POLICIES: list[tuple[str, Optional[float]]] = [
    ("fsync never", None),
    ("fsync every append", 0.0),
    ("at most every 10 ms", 0.01),
    ("at most every 50 ms", 0.05),
    ("at most every 200 ms", 0.2),
]


def run_once(parent: str, every_s: Optional[float], appends: int) -> tuple[float, int]:
    """Seconds per append and fsyncs made, for one fresh spool."""
    syncs = 0

    def counting_fsync(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        os.fsync(fd)

    directory = tempfile.mkdtemp(dir=parent)
    os.chmod(directory, 0o700)
    hooks = Hooks(fsync=counting_fsync)
    spool = Spool.open(directory, 1 << 40, fsync_every_s=every_s, hooks=hooks)
    try:
        started = time.perf_counter()
        for _ in range(appends):
            result = spool.append("publish_events", "bench", EVENTS)
            assert result.ok, result.reason
        elapsed = time.perf_counter() - started
    finally:
        spool.close()
        shutil.rmtree(directory)
    return elapsed / appends, syncs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to make the spools (default: TMPDIR)")
    args = parser.parse_args()
    parent = tempfile.mkdtemp(dir=args.dir)
    try:
        for name, every_s in POLICIES:
            results = [run_once(parent, every_s, args.appends) for _ in range(args.runs)]
            per_append = statistics.median(seconds for seconds, _ in results)
            syncs = statistics.median(count for _, count in results)
            print(
                f"{name:<22} {per_append * 1e6:9.1f} µs/append "
                f"{1 / per_append:9.0f} appends/s {syncs:6.0f} fsyncs / {args.appends} appends"
            )
    finally:
        shutil.rmtree(parent)


if __name__ == "__main__":
    main()
