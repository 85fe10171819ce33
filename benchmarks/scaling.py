"""Measurements 9 and 10: separately started producer processes sharing one pipeline.

A group is ``count`` interpreters (``benchmarks.pipeline_jobs``, job
``producer``) that make a trubrics_mp client with the same settings and URL,
so they share one flusher, and send one warm-up event each. Every group of a
measurement is started and warmed first (each with a flusher of its own: its
URL differs); then the rounds are interleaved, round 1 of every group, then
round 2..., so that the machine's drift over the minute the step lasts falls
on every group alike. A round releases a group's producers together (one
``go`` line to each, the clock started before the first) and waits until the
sink holds the round's events: the same total every time, split evenly
between the producers. The time of a round is from the release to the sink's
answer to the request that completed it. While one group runs, the others
wait on their stdin and their flushers idle.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Group:
    """One group of producers: its key in the results, sink label, size and peer."""

    key: str
    label: str
    count: int
    peer: str = "trubrics_mp"


def run_interleaved(
    procs: Processes, sink: str, groups: list[Group], sizes: dict[str, Any], say: Progress
) -> dict[str, dict[str, Any]]:
    """Every group started and warmed, then ``scaling_rounds`` interleaved rounds;
    per group, its rounds and their medians."""
    started = [_Running(procs, sink, group, sizes) for group in groups]
    try:
        for running in started:
            running.warm_up()
        rounds = sizes["scaling_rounds"]
        for index in range(rounds):
            for running in started:
                say(f"  {running.group.key}: round {index + 1}/{rounds}")
                running.round(index)
        return {running.group.key: running.finish() for running in started}
    finally:
        for running in started:
            running.kill()
        procs.sweep()  # their flushers linger otherwise


class _Running:
    """A started group: its producers, what the sink held before its next round."""

    def __init__(self, procs: Processes, sink: str, group: Group, sizes: dict[str, Any]) -> None:
        self.group, self.sizes = group, sizes
        self.share = sizes["scaling_total"] // group.count
        spec = {
            "job": "producer",
            "peer": group.peer,
            "host": f"{sink}/{group.label}",
            "share": self.share,
            "max_wait_s": sizes["max_wait_s"],
        }
        job = "benchmarks.pipeline_jobs"
        self.producers = [
            procs.start(["-m", job, json.dumps({**spec, "worker": w})], "jobs")
            for w in range(group.count)
        ]
        self.waiting = {"sink": sink, "label": group.label}
        self.rounds: list[dict[str, Any]] = []
        self.hellos: list[dict[str, Any]] = []
        self.before: dict[str, Any] = {}

    def warm_up(self) -> None:
        self.hellos = [_read(p) for p in self.producers]
        count, sizes = self.group.count, self.sizes
        self.before = wait_sink(self.waiting, count, sizes["idle_s"], sizes["max_wait_s"])
        if self.before.get("events", 0) < count or not all(h["ready"] for h in self.hellos):
            raise RuntimeError(f"{self.group.key}: the warm-up events did not all arrive")

    def round(self, index: int) -> None:
        total = self.share * self.group.count
        row, answers = _round(self.producers, self.waiting, index, total, self.before, self.sizes)
        self.rounds.append(_round_result(row, self.before, total, answers))
        self.before = row

    def finish(self) -> dict[str, Any]:
        hwm = procfs.status_kb(self.hellos[0]["flusher_pid"], "VmHWM")
        for proc in self.producers:
            _send(proc, "quit")
            proc.wait(60)
        flushers = sorted({h["flusher_pid"] for h in self.hellos})
        summary = _summary(self.rounds, self.share, self.group.count, flushers)
        return {**summary, "flusher_hwm_kb": hwm, "spool": self.hellos[0].get("spool")}

    def kill(self) -> None:
        for proc in self.producers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


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
