"""Jobs of the pipeline measurements: ``python -m benchmarks.pipeline_jobs '<json spec>'``.

- ``flusher_cpu`` (measurement 7): the trubrics_mp flusher's own CPU per
  delivered event, read from ``/proc/<flusher pid>/stat`` around rounds of
  events in a tight loop;
- ``cold_burst`` (8): a tight loop right after the client is made, no warm-up;
- ``producer`` (9): one of several producer processes of one pipeline,
  interactive like the latency job: it answers ``ready`` once warmed, then
  each ``go ROUND`` line with the JSON result of tracking its share, until
  ``quit``. The runner (:mod:`benchmarks.scaling`) times the rounds at the sink.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable

from trubrics_mp._process import FLUSHER_COMM

from . import procfs
from .jobs import delivery, flusher_memory, reply, run, wait_sink, warm_up
from .peers import Peer, keyed_properties, make_peer


def flusher_of(peer: Peer, job_started: int) -> int:
    """The pid of the peer's flusher, checked: named ``trubrics-flush``, not our child.

    ``stats()`` names it; if it did not, the newest process of that name
    started since this job began is taken (every flusher a run starts is its own,
    see :mod:`benchmarks.procs`).
    """
    pid = peer.flusher_pid() or procfs.newest_named(FLUSHER_COMM, job_started)
    if pid is None or procfs.comm(pid) != FLUSHER_COMM:
        raise RuntimeError(f"no {FLUSHER_COMM} process found (stats() said {pid})")
    if procfs.parent(pid) == os.getpid():
        raise RuntimeError(f"the flusher {pid} is a child of the job: not the design's")
    return pid


def _track_loop(peer: Peer, prefix: str, n: int) -> float:
    """``n`` tracks of keyed events in a tight loop; the seconds it took."""
    t0 = time.monotonic()
    for i in range(n):
        peer.track(keyed_properties(f"{prefix}{i}"))
    return time.monotonic() - t0


# -- 7: flusher CPU per delivered event -------------------------------------------------
def job_flusher_cpu(spec: dict[str, Any]) -> dict[str, Any]:
    """Rounds of ``n`` events; the flusher's utime + stime per delivered event, each round."""
    job_started = procfs.start_ticks()
    peer = make_peer(spec["peer"], spec["host"])
    warm_up(peer, spec)
    pid = flusher_of(peer, job_started)
    n, rounds = spec["n"], []
    for index in range(spec["rounds"]):
        cpu0, t0 = procfs.cpu_seconds(pid), time.monotonic()
        tracked_s = _track_loop(peer, f"{index}-", n)
        peer.flush(spec["max_wait_s"])
        row = wait_sink(spec, 1 + n * (index + 1), spec["idle_s"], spec["max_wait_s"])
        cpu_s = procfs.cpu_seconds(pid) - cpu0
        delivered = int(row.get("events", 0)) - 1 - n * index
        rounds.append(
            {
                "sent": n,
                "delivered": delivered,
                "flusher_cpu_s": cpu_s,
                "us_per_event": 1e6 * cpu_s / delivered if delivered > 0 else None,
                "track_loop_s": tracked_s,
                "elapsed_s": float(row.get("last_at", t0)) - t0,
            }
        )
    per_event = [r["us_per_event"] for r in rounds if r["us_per_event"] is not None]
    result: dict[str, Any] = {
        "rounds": rounds,
        "us_per_event": statistics.median(per_event) if per_event else None,
        "sent": n * len(rounds),
        "delivered": sum(r["delivered"] for r in rounds),
        "flusher_pid": pid,
        "flusher_comm": procfs.comm(pid),
        "clock_ticks": procfs.CLOCK_TICKS,
    }
    result.update(flusher_memory(peer))
    peer.close(30.0)
    return result


# -- 8: cold burst ----------------------------------------------------------------------
def job_cold_burst(spec: dict[str, Any]) -> dict[str, Any]:
    """``n`` tracks right after construction (no warm-up), then flush and the sink."""
    job_started = procfs.start_ticks()
    built = time.monotonic()
    peer = make_peer(spec["peer"], spec["host"])
    t0 = time.monotonic()
    tracked_s = _track_loop(peer, "", spec["n"])
    peer.flush(spec["max_wait_s"])
    row = wait_sink(spec, spec["n"], spec["idle_s"], spec["max_wait_s"])
    result = {
        **delivery(row, spec["n"], t0, warm=0),
        "construct_s": t0 - built,
        "track_loop_s": tracked_s,
    }
    if spec["peer"].startswith("trubrics_mp"):
        pid = flusher_of(peer, job_started)
        result.update(flusher_memory(peer))
        result["flusher_new"] = procfs.start_ticks(pid) >= job_started
        result["dropped"] = peer.client.stats().dropped
    peer.close(30.0)
    return result


# -- 9: one producer of several ---------------------------------------------------------
def job_producer(spec: dict[str, Any]) -> None:
    """Warm up, say ready; per ``go ROUND``: track the share, flush, answer; ``quit``."""
    peer = make_peer(spec.get("peer", "trubrics_mp"), spec["host"])
    worker = spec["worker"]
    peer.track(keyed_properties(f"warm-{worker}"))
    warmed: bool = peer.client.flush(timeout=30.0)  # True: delivered
    spool = peer.client.stats().spool  # "off", "on" or "unavailable: ..."
    reply({"ready": warmed, "pid": os.getpid(), "flusher_pid": peer.flusher_pid(), "spool": spool})
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "go":
            break
        tracked_s = _track_loop(peer, f"{words[1]}-{worker}-", spec["share"])
        flushed: bool = peer.client.flush(timeout=spec["max_wait_s"])
        dropped = peer.client.stats(flusher=False).dropped
        reply({"track_loop_s": tracked_s, "flushed": flushed, "dropped": dropped})
    peer.close(30.0)


JOBS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "flusher_cpu": job_flusher_cpu,
    "cold_burst": job_cold_burst,
    "producer": job_producer,
}


if __name__ == "__main__":
    sys.exit(run(JOBS))
