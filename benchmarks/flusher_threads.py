"""Where the flusher's CPU goes, per thread: the main loop against the senders.

``python -m benchmarks.flusher_threads [--events N]``: starts ``benchmarks.sink``
and a client in this process (``flush_at=100``, a private runtime directory),
tracks ``N`` events in a tight loop, flushes, and prints each flusher thread's
user + system CPU (``/proc/<pid>/task/<tid>/stat``) per event. The first
thread is the main loop; the senders follow (the watchdog and resolver, if
any, last). Shared machine, 10 ms ticks: a few runs tell the spread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from benchmarks.procfs import CLOCK_TICKS


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of ``pid``."""
    found = {}
    for tid in sorted(map(int, os.listdir(f"/proc/{pid}/task"))):
        with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
        fields = text[text.rindex(")") + 2 :].split()
        found[tid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flusher_threads")
    parser.add_argument("--events", type=int, default=300_000)
    args = parser.parse_args()
    os.environ["TRUBRICS_MP_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="tmbt-")
    from trubrics_mp import Trubrics  # after the runtime directory is set

    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        url = sink.stdout.readline().split()[-1]
        client = Trubrics(api_key="bench-key", host=f"{url}/threads", flush_at=100)
        client.track(user_id="u", event="warm-up")
        client.flush()
        pid = client.stats().flusher_pid
        assert pid is not None
        before = thread_cpu_s(pid)
        for i in range(args.events):
            client.track(user_id="u", event="e", properties={"bench_key": str(i), "a": 1})
        client.flush()
        after = thread_cpu_s(pid)
        client.close()
    finally:
        sink.terminate()
        sink.wait(30)
    total = 0.0
    for tid, cpu in after.items():
        spent = cpu - before.get(tid, 0.0)
        total += spent
        print(f"  thread {tid}: {1e6 * spent / args.events:5.2f} µs per event")
    print(f"flusher total: {1e6 * total / args.events:.2f} µs per event ({args.events:,} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
