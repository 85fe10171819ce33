"""Measured processes: ``python -m benchmarks.jobs '<json spec>'``.

Each job runs one peer in a fresh interpreter and prints its result as one
JSON line on stdout. ``latency`` is interactive: it reads ``round`` /
``quit`` lines on stdin and answers each with a JSON line, so the runner can
interleave rounds of different peers. psutil is imported only where needed,
so that the memory baseline (``memory`` with no peer) stays a bare worker.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import time
from typing import Any, Callable, Optional

from .peers import PROPERTIES, Peer, keyed_properties, make_peer
from .procfs import status_kb as proc_status_kb
from .procs import sink_counts

WARM_KEY = "warm"
POLL_S = 0.02
TICK_S = 0.1


# -- helpers -------------------------------------------------------------------------
def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    """p50, p99, p99.9 and max of ``samples_ns``, in microseconds."""
    ordered = sorted(samples_ns)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return ordered[min(last, int(q * len(ordered)))] / 1000

    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": ordered[last] / 1000}


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process, its live descendants and reaped children."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return float(total + usage.ru_utime + usage.ru_stime)


def wait_sink(
    spec: dict[str, Any],
    target: int,
    idle_s: float,
    max_s: float,
    tick: Optional[Callable[[], None]] = None,
) -> dict[str, Any]:
    """Poll the sink until ``target`` events arrived, or none for ``idle_s``, or ``max_s``.

    ``tick`` (if given) is called about every ``TICK_S`` while waiting.
    """
    deadline = time.monotonic() + max_s
    last_events, last_change, ticked = -1, time.monotonic(), time.monotonic()
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if tick is not None and time.monotonic() - ticked >= TICK_S:
            tick()
            ticked = time.monotonic()
        row = sink_counts(spec["sink"], spec["label"]) or {"events": 0}
        if row["events"] >= target:
            break
        if row["events"] != last_events:
            last_events, last_change = row["events"], time.monotonic()
        elif time.monotonic() - last_change >= idle_s:
            break
        time.sleep(POLL_S)
    row["waited_until"] = time.monotonic()
    return row


def warm_up(peer: Peer, spec: dict[str, Any]) -> None:
    """One event, flushed and seen by the sink: connections and flushers are up."""
    peer.track(keyed_properties(WARM_KEY))
    peer.flush(30.0)
    if wait_sink(spec, 1, idle_s=30.0, max_s=30.0).get("events", 0) < 1:
        raise RuntimeError(f"{spec['peer']}: the warm-up event never reached the sink")


def flusher_memory(peer: Peer) -> dict[str, Optional[int]]:
    pid = peer.flusher_pid()
    if pid is None:
        return {"flusher_rss_kb": None, "flusher_hwm_kb": None}
    return {
        "flusher_rss_kb": proc_status_kb(pid, "VmRSS"),
        "flusher_hwm_kb": proc_status_kb(pid, "VmHWM"),
    }


def delivery(row: dict[str, Any], sent: int, t0: float, warm: int = 1) -> dict[str, Any]:
    """Delivered, duplicated and events/s from a sink row (``warm`` warm-up events excluded)."""
    delivered = max(0, int(row.get("events", 0)) - warm)
    distinct = max(0, int(row.get("distinct", 0)) - warm)
    elapsed = float(row["last_at"]) - t0 if delivered and "last_at" in row else 0.0
    return {
        "sent": sent,
        "delivered": delivered,
        "duplicated": delivered - distinct,
        "requests": int(row.get("requests", 0)) - warm,
        "empty_requests": int(row.get("empty_requests", 0)),
        "elapsed_s": elapsed,
        "events_per_s": delivered / elapsed if elapsed > 0 else 0.0,
    }


# -- jobs ----------------------------------------------------------------------------
def job_latency(spec: dict[str, Any]) -> None:
    """Interactive rounds of timed ``track()`` calls (measurements 1 and 6)."""
    peer = make_peer(spec["peer"], spec["host"], shutdown_timeout=spec.get("shutdown_s", 10.0))
    normal = spec["mode"] == "normal"
    if normal:
        warm_up(peer, spec)
    sent = 0
    reply({"ready": True})
    for line in sys.stdin:
        if line.strip() != "round":
            break
        result = _timed_round(peer, spec["calls"], spec["burst"], spec["pause_s"])
        sent += spec["calls"]
        if normal:
            peer.flush(60.0)  # untimed: the next peer's round runs undisturbed
        reply(result)
    if normal:
        peer.close(60.0)
    elif spec["peer"] == "trubrics_mp":
        peer.close(3.0)  # bounded: the API is slow or down
    reply({"sent": sent})
    sys.stdout.flush()
    os._exit(0)  # skip atexit flushes of peers whose API is slow or down


def _timed_round(peer: Peer, calls: int, burst: int, pause_s: float) -> dict[str, Any]:
    samples = [0] * calls
    clock = time.perf_counter_ns
    track = peer.track
    props = PROPERTIES
    for start in range(0, calls, burst):
        for i in range(start, min(start + burst, calls)):
            began = clock()
            track(props)
            samples[i] = clock() - began
        time.sleep(pause_s)
    return percentiles_us(samples)


def job_e2e(spec: dict[str, Any]) -> dict[str, Any]:
    """One process: ``n`` tracks in a tight loop, then until the sink holds them."""
    peer = make_peer(spec["peer"], spec["host"])
    warm_up(peer, spec)
    n = spec["n"]
    cpu0, t0 = tree_cpu_s(), time.monotonic()
    for i in range(n):
        peer.track(keyed_properties(str(i)))
    tracked_s = time.monotonic() - t0
    peer.flush(spec["max_wait_s"])
    row = wait_sink(spec, n + 1, spec["idle_s"], spec["max_wait_s"])
    result = {**delivery(row, n, t0), "track_loop_s": tracked_s, "cpu_s": tree_cpu_s() - cpu0}
    result.update(flusher_memory(peer))
    peer.close(30.0)
    return result


def job_fork(spec: dict[str, Any]) -> dict[str, Any]:
    """``workers`` children forked after the client was made share ``n`` events."""
    peer = make_peer(spec["peer"], spec["host"])
    warm_up(peer, spec)
    workers, per = spec["workers"], spec["n"] // spec["workers"]
    cpu0, t0 = tree_cpu_s(), time.monotonic()
    pids = []
    for w in range(workers):
        pid = os.fork()
        if pid == 0:
            _worker(peer, w, per)
        pids.append(pid)
    exits = _reap(pids, spec["max_wait_s"])
    # The owner's flush() covers what the flusher has read when it asks; the
    # workers' last events may still sit unread in their sockets, so ask again
    # while waiting (as a master process flushing periodically would).
    peer.flush(spec["max_wait_s"])
    row = wait_sink(
        spec, per * workers + 1, spec["idle_s"], spec["max_wait_s"], lambda: peer.flush(5.0)
    )
    result = {**delivery(row, per * workers, t0), "cpu_s": tree_cpu_s() - cpu0}
    result.update(flusher_memory(peer))
    result["worker_exits"] = exits
    peer.close(30.0)
    return result


def _worker(peer: Peer, worker: int, count: int) -> None:
    """A forked worker: track, run the exit handlers a normal exit would, leave."""
    code = 0
    try:
        for i in range(count):
            peer.track(keyed_properties(f"{worker}-{i}"))
        atexit._run_exitfuncs()
    except BaseException:
        code = 1
    os._exit(code)


def _reap(pids: list[int], max_s: float) -> list[Optional[int]]:
    """Exit codes of the workers; one still running at the deadline is killed (None)."""
    deadline = time.monotonic() + max_s
    codes: dict[int, Optional[int]] = {}
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(POLL_S)
    for pid in pids:
        if pid not in codes:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            codes[pid] = None
    return [codes[pid] for pid in pids]


def job_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """RSS of a bare worker (no peer), or after import + construct + ``tracks`` calls."""
    if spec.get("peer") is None:
        return {"rss_kb": proc_status_kb(None, "VmRSS")}
    peer = make_peer(spec["peer"], spec["host"])
    for i in range(spec["tracks"]):
        peer.track(PROPERTIES)
        if i % 100 == 99:
            time.sleep(0.005)
    peer.flush(30.0)
    wait_sink(spec, spec["tracks"], idle_s=5.0, max_s=30.0)
    result: dict[str, Any] = {"rss_kb": proc_status_kb(None, "VmRSS")}
    result.update(flusher_memory(peer))
    peer.close(30.0)
    return result


def reply(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


JOBS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "latency": job_latency,
    "e2e": job_e2e,
    "fork": job_fork,
    "memory": job_memory,
}


def run(jobs: dict[str, Callable[[dict[str, Any]], Any]]) -> int:
    """Run the job that ``sys.argv[1]`` (a JSON spec) names; print its result."""
    spec = json.loads(sys.argv[1])
    result = jobs[spec["job"]](spec)
    if result is not None:
        reply(result)
    return 0


def main() -> int:
    return run(JOBS)


if __name__ == "__main__":
    sys.exit(main())
