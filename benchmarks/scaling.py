"""Measurement 9: separately started producer processes sharing one pipeline.

For each producer count, ``count`` interpreters (``benchmarks.pipeline_jobs``,
job ``producer``) make a trubrics_mp client with the same settings and URL, so
they share one flusher, and send one warm-up event each. Once the sink holds
every warm-up event, each round releases them together (one ``go`` line to
each, the clock started before the first) and waits until the sink holds the
round's events: the same total every time, split evenly between the producers.
The time of a round is from the release to the sink's answer to the request
that completed it. The producers and their flusher are stopped before the next
count, so every count starts with a flusher of its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from typing import Any, Callable

from . import procfs
from .jobs import wait_sink
from .procs import Processes

Progress = Callable[[str], None]
_COUNTED = ("events", "distinct", "requests")


def run_scaling(
    procs: Processes,
    sink: str,
    label: str,
    count: int,
    sizes: dict[str, Any],
    say: Progress,
    peer: str = "trubrics_mp",
) -> dict[str, Any]:
    """Rounds with ``count`` producers of ``peer``; per round and their medians."""
    share = sizes["scaling_total"] // count
    spec = {
        "job": "producer",
        "peer": peer,
        "host": f"{sink}/{label}",
        "share": share,
        "max_wait_s": sizes["max_wait_s"],
    }
    producers = [
        procs.start(["-m", "benchmarks.pipeline_jobs", json.dumps({**spec, "worker": w})], "jobs")
        for w in range(count)
    ]
    try:
        hellos = [_read(p) for p in producers]
        waiting = {"sink": sink, "label": label}
        before = wait_sink(waiting, count, sizes["idle_s"], sizes["max_wait_s"])
        if before.get("events", 0) < count or not all(h["ready"] for h in hellos):
            raise RuntimeError(f"{count} producers: the warm-up events did not all arrive")
        rounds = []
        for index in range(sizes["scaling_rounds"]):
            say(f"  {count} producers, round {index + 1}/{sizes['scaling_rounds']}")
            row, answers = _round(producers, waiting, index, share * count, before, sizes)
            rounds.append(_round_result(row, before, share * count, answers))
            before = row
        hwm = procfs.status_kb(hellos[0]["flusher_pid"], "VmHWM")
        for proc in producers:
            _send(proc, "quit")
            proc.wait(60)
    finally:
        for proc in producers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        procs.sweep()  # the flusher lingers otherwise: the next count gets its own
    flushers = sorted({h["flusher_pid"] for h in hellos})
    summary = _summary(rounds, share, count, flushers)
    return {**summary, "flusher_hwm_kb": hwm, "spool": hellos[0].get("spool")}


def _round(
    producers: list[subprocess.Popen[str]],
    waiting: dict[str, Any],
    index: int,
    total: int,
    before: dict[str, Any],
    sizes: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Release every producer, wait for the sink; its row (with ``t0``) and the answers."""
    target = int(before["events"]) + total
    t0 = time.monotonic()
    for proc in producers:
        _send(proc, f"go {index}")
    row = wait_sink(waiting, target, sizes["idle_s"], sizes["max_wait_s"])
    row["t0"] = t0
    answers = [_read(p) for p in producers]
    return row, answers


def _round_result(
    row: dict[str, Any], before: dict[str, Any], sent: int, answers: list[dict[str, Any]]
) -> dict[str, Any]:
    got = {k: int(row.get(k, 0)) - int(before.get(k, 0)) for k in _COUNTED}
    elapsed = float(row.get("last_at", row["t0"])) - row["t0"] if got["events"] else 0.0
    dropped: dict[str, int] = {}
    for answer in answers:
        for reason, n in answer["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    return {
        "sent": sent,
        "delivered": got["events"],
        "duplicated": got["events"] - got["distinct"],
        "requests": got["requests"],
        "elapsed_s": elapsed,
        "events_per_s": got["events"] / elapsed if elapsed > 0 else 0.0,
        "slowest_track_loop_s": max(a["track_loop_s"] for a in answers),
        "all_flushed": all(a["flushed"] for a in answers),
        "dropped_so_far": dropped,
    }


def _summary(
    rounds: list[dict[str, Any]], share: int, count: int, flushers: list[Any]
) -> dict[str, Any]:
    rates = [r["events_per_s"] for r in rounds]
    return {
        "producers": count,
        "share": share,
        "rounds": rounds,
        "sent": sum(r["sent"] for r in rounds),
        "delivered": sum(r["delivered"] for r in rounds),
        "duplicated": sum(r["duplicated"] for r in rounds),
        "elapsed_s": statistics.median(r["elapsed_s"] for r in rounds),
        "events_per_s": statistics.median(rates),
        "min_events_per_s": min(rates),
        "max_events_per_s": max(rates),
        "flusher_pids": flushers,
    }


def _send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a producer exited early (exit {proc.wait()}), see logs")
    answer: dict[str, Any] = json.loads(line)
    return answer
