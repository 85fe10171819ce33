"""The demo's verdict: counts from the collector and the workers, as text and JSON.

Every event the demo app tracks carries ``demo_run``, a unique ``demo_id``
(``<request>/prompt`` or ``<request>/llm``) and ``worker_pid``; each worker
reports how long its calls took (``worker-<pid>.json``). From these:

- *tracked*: calls the workers made (their reports);
- *stored*, *duplicates*: events of this run in the collector, and how many
  of them repeat a ``demo_id`` already stored;
- *missing*: events of requests answered 200 that the collector does not hold.

The run is OK when every tracked event is stored exactly once, every request
was answered, every worker that tracked reported, and gunicorn exited 0.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import shlex
from pathlib import Path
from typing import Any, Optional

from .load import LoadResult


@dataclasses.dataclass
class Observed:
    """What the demo measured around the load, besides the load itself."""

    run_id: str
    workers: int
    events: list[dict[str, Any]]  # this run's events as the collector stores them
    posts: int  # POSTs the collector accepted during the run
    reports: list[dict[str, Any]]  # worker-<pid>.json contents
    drain_s: Optional[float]  # SIGTERM to the master -> the collector holds every event
    stop_s: Optional[float]  # SIGTERM to the master -> the master exited
    gunicorn_status: Optional[int]
    flusher_pid: Optional[int]
    leftovers_killed: bool
    db: Path


def percentile(values: list[int], fraction: float) -> Optional[int]:
    """Nearest-rank percentile of ``values`` (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _cost(reports: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [ns for report in reports for ns in report[key]]
    p50, p99 = percentile(values, 0.50), percentile(values, 0.99)
    return {
        "calls": len(values),
        "p50_us": None if p50 is None else round(p50 / 1000, 1),
        "p99_us": None if p99 is None else round(p99 / 1000, 1),
    }


def _stored(events: list[dict[str, Any]]) -> tuple[collections.Counter[str], dict[str, int]]:
    by_id: collections.Counter[str] = collections.Counter()
    by_worker: collections.Counter[str] = collections.Counter()
    for event in events:
        properties = event.get("properties") or {}
        by_id[str(properties.get("demo_id"))] += 1
        by_worker[str(properties.get("worker_pid"))] += 1
    return by_id, dict(sorted(by_worker.items()))


def build(load: LoadResult, observed: Observed, concurrency: int) -> dict[str, Any]:
    """The summary as a JSON-ready dict; ``ok`` and ``problems`` hold the verdict."""
    by_id, by_worker = _stored(observed.events)
    expected = {f"{seq}/{kind}" for seq in load.ok_seqs for kind in ("prompt", "llm")}
    track, track_llm = _cost(observed.reports, "track_ns"), _cost(observed.reports, "track_llm_ns")
    tracked = track["calls"] + track_llm["calls"]
    summary: dict[str, Any] = {
        "run_id": observed.run_id,
        "requests": {
            "sent": load.sent,
            "ok": load.ok,
            "failed": load.failed,
            "errors": load.errors,
            "concurrency": concurrency,
            "seconds": round(load.seconds, 3),
        },
        "workers": observed.workers,
        "worker_reports": len(observed.reports),
        "tracked": tracked,
        "stored": sum(by_id.values()),
        "unique": len(by_id),
        "duplicates": sum(n - 1 for n in by_id.values()),
        "missing": len(expected - set(by_id)),
        "events_per_worker": by_worker,
        "collector_requests": observed.posts,
        "track_us": track,
        "track_llm_us": track_llm,
        "drain_seconds": None if observed.drain_s is None else round(observed.drain_s, 3),
        "stop_seconds": None if observed.stop_s is None else round(observed.stop_s, 3),
        "gunicorn_exit_status": observed.gunicorn_status,
        "flusher_pid": observed.flusher_pid,
        "db": str(observed.db),
    }
    summary["problems"] = _problems(summary, observed)
    summary["ok"] = not summary["problems"]
    return summary


def _problems(summary: dict[str, Any], observed: Observed) -> list[str]:
    found = []
    if summary["duplicates"]:
        found.append(f"{summary['duplicates']} event(s) stored more than once")
    if summary["missing"]:
        found.append(f"{summary['missing']} event(s) of answered requests never stored")
    if summary["tracked"] != summary["unique"]:
        found.append(f"{summary['tracked']} tracked but {summary['unique']} distinct stored")
    reported = {str(report["pid"]) for report in observed.reports}
    silent = sorted(set(summary["events_per_worker"]) - reported)
    if silent:
        found.append(f"worker(s) {', '.join(silent)} tracked events but never reported")
    if summary["requests"]["failed"]:
        found.append(f"{summary['requests']['failed']} request(s) failed")
    if observed.drain_s is None:
        found.append("the collector never held every event")
    if observed.gunicorn_status != 0:
        found.append(f"gunicorn exited with status {observed.gunicorn_status}")
    if observed.leftovers_killed:
        found.append("processes were still running after gunicorn exited (killed)")
    return found


def _us(cost: dict[str, Any]) -> str:
    if not cost["calls"]:
        return "no calls measured"
    calls = cost["calls"]
    return f"p50 {cost['p50_us']} us, p99 {cost['p99_us']} us ({calls} calls, timed in the workers)"


def _seconds(value: Optional[float]) -> str:
    return "never" if value is None else f"{value:.2f} s"


def format_text(summary: dict[str, Any]) -> str:
    """The human summary, one fact per line."""
    requests, db = summary["requests"], summary["db"]
    rate = requests["sent"] / requests["seconds"] if requests["seconds"] else 0.0
    per_worker = ", ".join(f"pid {pid}: {n}" for pid, n in summary["events_per_worker"].items())
    posts = summary["collector_requests"]
    per_post = f" ({summary['stored'] / posts:.1f} events each)" if posts else ""
    lines = [
        f"Summary of run {summary['run_id']}",
        f"  requests          {requests['sent']} sent, {requests['ok']} answered 200, in"
        f" {requests['seconds']:.2f} s ({rate:.0f} req/s, concurrency {requests['concurrency']})",
        f"  events tracked    {summary['tracked']} ({summary['track_us']['calls']} track() +"
        f" {summary['track_llm_us']['calls']} track_llm()) by {summary['worker_reports']}"
        f" worker processes",
        f"  per worker        {per_worker or 'none'}",
        f"  stored            {summary['stored']} events in the collector: duplicates"
        f" {summary['duplicates']}, missing {summary['missing']}",
        f"  API requests      {posts} POSTs accepted by the collector{per_post}",
        f"  flusher           pid {summary['flusher_pid']}: one process, started by the gunicorn"
        " master, shared by every worker",
        f"  track() cost      {_us(summary['track_us'])}",
        f"  track_llm() cost  {_us(summary['track_llm_us'])}",
        f"  time to drain     {_seconds(summary['drain_seconds'])} from SIGTERM to the master"
        " until the collector held every event",
        f"  gunicorn stop     {_seconds(summary['stop_seconds'])}, exit status"
        f" {summary['gunicorn_exit_status']}",
        f"  SQLite file       {db}",
        f"  browse it with    trubrics-mp events --db {shlex.quote(db)} --last 20",
    ]
    if summary["ok"]:
        lines.append("OK: every tracked event was stored exactly once.")
    else:
        lines += [f"FAILED: {problem}" for problem in summary["problems"]]
    return "\n".join(lines)


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, sort_keys=True)
