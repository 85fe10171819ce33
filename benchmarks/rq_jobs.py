"""``python -m benchmarks.rq_jobs [--jobs 300] [--rounds 1]``: RQ jobs with and without the client.

The stock RQ worker forks a fresh "work horse" per job, and each horse imports the
job's module anew: a client made there is made once per job (and, until issue 10,
starts a flusher per job). This times ``--jobs`` jobs, each tracking
``EVENTS_PER_JOB`` events with ``trubrics_mp``, run by ``rq worker --burst`` (the
worker leaves once the queue is empty) against a private ``redis-server``, in
three modes, one after the other, ``--rounds`` times each:

- ``enabled``: the client is made in each horse, on the job's first call;
- ``in-worker``: the client is made in the worker's main process (``rq worker -c
  benchmarks.rq_settings``), so every horse inherits it and its one flusher;
- ``disabled``: the client is made in each horse with ``disabled=True``.

It prints each run: wall seconds from the worker's start to its exit, jobs per
second, and for the enabled modes the events the sink received and its POSTs.

Needs ``redis-server`` (``make system-deps``) and ``rq`` (the ``test`` extra).
Every process inherits ``BENCH_RUN_TAG`` and is stopped at the end
(``benchmarks/procs.py``); logs go to a temporary directory, kept on failure.
The job itself is :func:`track_job` of this module, which the horses import.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from trubrics_mp import Trubrics

from .peers import API_KEY, keyed_properties
from .procs import Processes, sink_counts

EVENTS_PER_JOB = 5
JOB = "benchmarks.rq_jobs.track_job"  # by name: run as a script, __name__ is "__main__"
HOST_VAR, DISABLED_VAR = "BENCH_RQ_HOST", "BENCH_RQ_DISABLED"
MODES = ("enabled", "in-worker", "disabled")
REDIS_START_S = 30.0
RUN_TIMEOUT_S = 900.0
DELIVERY_WAIT_S = 120.0
_client: Optional[Trubrics] = None


# -- the job (runs in each work horse) -------------------------------------------------
def client() -> Trubrics:
    """This process's client, made on first use (``rq_settings`` makes it in the worker)."""
    global _client
    if _client is None:
        _client = Trubrics(
            API_KEY, os.environ[HOST_VAR], disabled=os.environ.get(DISABLED_VAR) == "1"
        )
    return _client


def track_job(job: int) -> int:
    """Track ``EVENTS_PER_JOB`` events."""
    for i in range(EVENTS_PER_JOB):
        properties = keyed_properties(f"{job}:{i}")
        client().track(user_id="rq-user", event="Job done", properties=properties)
    return os.getpid()


# -- the runner ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(procs: Processes, log_dir: Path) -> str:
    """A private ``redis-server`` on a free port; its ``redis://`` URL once it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: run `make system-deps` first")
    port = _free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    log = open(log_dir / "redis.log", "a", encoding="utf-8")  # noqa: SIM115
    procs.started.append(
        subprocess.Popen(argv + ["no", "--dir", str(log_dir)], stdout=log, stderr=log, text=True)
    )
    deadline = time.monotonic() + REDIS_START_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer on port {port}")


def run_round(
    procs: Processes, redis_url: str, sink: str, jobs: int, mode: str, label: str
) -> dict[str, Any]:
    """Enqueue ``jobs`` jobs, then time ``rq worker --burst`` until it leaves."""
    from redis import Redis
    from rq import Queue

    with Redis.from_url(redis_url) as connection:
        queue = Queue(connection=connection)
        for job in range(jobs):
            queue.enqueue(JOB, job)
    disabled = "1" if mode == "disabled" else "0"
    env = {**procs.env, HOST_VAR: f"{sink}/{label}", DISABLED_VAR: disabled}
    argv = [str(Path(sys.executable).with_name("rq")), "worker", "--burst", "--quiet"]
    argv += ["--url", redis_url, "--path", str(Path(__file__).resolve().parent.parent)]
    if mode == "in-worker":
        argv += ["-c", "benchmarks.rq_settings"]
    started = time.monotonic()
    with open(procs.log_dir / f"{label}.log", "a", encoding="utf-8") as log:
        done = subprocess.run(argv, env=env, stdout=log, stderr=log, timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"rq worker --burst exited {done.returncode}: see {label}.log")
    with Redis.from_url(redis_url) as connection:
        failed = Queue(connection=connection).failed_job_registry
        if failed.count:
            raise RuntimeError(f"{failed.count} jobs failed: see {label}.log")
    row: dict[str, Any] = {"client": mode, "jobs": jobs}
    row.update(seconds=round(seconds, 2), jobs_per_s=round(jobs / seconds, 1))
    if mode != "disabled":
        row.update(_wait_delivered(sink, label, jobs * EVENTS_PER_JOB))
    procs.sweep()  # flushers still delivering are left alone only while they run
    return row


def _wait_delivered(sink: str, label: str, events: int) -> dict[str, Any]:
    deadline = time.monotonic() + DELIVERY_WAIT_S
    counts: dict[str, Any] = {}
    while time.monotonic() < deadline:
        counts = sink_counts(sink, label) or {}
        if counts.get("events", 0) >= events:
            break
        time.sleep(0.1)
    return {
        "events": events,
        "delivered": counts.get("distinct", 0),
        "posts": counts.get("requests", 0),
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rq_jobs", description=__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="trubrics-mp-bench-rq-"))
    rows = []
    try:
        with Processes(log_dir) as procs:
            _, sink = procs.start_sink()
            redis_url = start_redis(procs, log_dir)
            for index in range(args.rounds):
                for mode in MODES:
                    label = f"rq-{mode}-{index}"
                    rows.append(run_round(procs, redis_url, sink, args.jobs, mode, label))
                    print(json.dumps(rows[-1]), flush=True)
    except BaseException:
        print(f"FAILED: logs kept in {log_dir}", file=sys.stderr)
        raise
    shutil.rmtree(log_dir, ignore_errors=True)
    for row in rows:
        line = f"{row['jobs']} RQ jobs, client {row['client']:9}: {row['seconds']:6.2f} s"
        line += f" ({row['jobs_per_s']} jobs/s)"
        if "events" in row:
            line += f", {row['delivered']}/{row['events']} events in {row['posts']} POSTs"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
