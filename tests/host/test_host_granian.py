"""granian ``--interface wsgi --workers 2``, for real: real HTTP traffic, a real stop.

Each test starts ``granian --interface wsgi --workers 2 --port 0 servers_web:app``
(the WSGI app of ``tests/host/apps/servers/``). granian's main process never
imports the app; each worker does, so each makes a client of its own. Workers
leave through ``os._exit`` (no ``atexit``), and the main process exits soon after
SIGTERM: what each worker tracked is in its flusher, which delivers once its
owner is gone.

The port: granian's workers bind it with SO_REUSEPORT, so a second server of the
same user could bind the same port and take part of the traffic. granian is given
port 0 (the kernel never hands out a port that has a listener), and the test reads
the port from the workers' listening sockets, checks that no other process listens
there (else it starts granian again), and the app answers 421, tracking nothing,
to a request meant for another test (``HostRun.drive`` sends it again).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import psutil
import pytest
from support.collector import CollectorProcess
from support.host_runs import HostRun
from support.hosts import wait_http
from support.pipelines import assert_one_pipeline
from support.processes import ServerProcess

APP_DIR = Path(__file__).resolve().parent / "apps" / "servers"
GRANIAN = str(Path(sys.executable).with_name("granian"))
READY = r"Starting granian \(main PID: (\d+)\)"
STARTED = r"Started worker-\d+"
WORKERS = 2
FLUSH_AT = 50
# A flush interval longer than any test: batches are cut by size, or at the stop.
OPTIONS = {"flush_at": FLUSH_AT, "flush_interval": 600, "shutdown_timeout": 30}
DEADLINE_S = 60.0
START_ATTEMPTS = 5
REQUESTS = 2000

Start = Callable[[], tuple[HostRun, str]]


def listening_ports(server: ServerProcess) -> tuple[set[int], set[int]]:
    """The TCP ports the server's processes listen on, and the pids of *every* process
    of the machine that listens on one of them."""
    try:
        ours = {server.pid, *(p.pid for p in psutil.Process(server.pid).children(True))}
    except psutil.Error:
        return set(), set()
    listening = [
        (c.laddr[1], c.pid)
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr
    ]
    ports = {port for port, pid in listening if pid in ours}
    holders = {pid for port, pid in listening if port in ports and pid is not None}
    return ports, holders - ours


@pytest.fixture
def granian(tmp_path: Path, collector: CollectorProcess) -> Iterator[Start]:
    """Start granian as a user would, on a port no other server shares."""
    runs: list[HostRun] = []

    def start() -> tuple[HostRun, str]:
        failures = []
        for _ in range(START_ATTEMPTS):
            run = HostRun(f"granian --interface wsgi --workers {WORKERS}", collector, OPTIONS)
            runs.append(run)
            argv = [GRANIAN, "--interface", "wsgi", "--workers", str(WORKERS)]
            argv += ["--host", "127.0.0.1", "--port", "0", "--working-dir", str(APP_DIR)]
            argv += ["servers_web:app"]
            env = run.env()
            server = ServerProcess(argv, name="granian", ready=READY, cwd=tmp_path, env=env)
            run.start(server)
            server.wait_for(STARTED, WORKERS, DEADLINE_S)
            ports, others = listening_ports(server)
            if len(ports) == 1 and not others:
                url = f"http://127.0.0.1:{ports.pop()}"
                wait_http(f"{url}/pid?test={run.test_id}", DEADLINE_S)
                return run, url
            failures.append(f"listening on {ports}, shared with pids {others}")
            run.kill()
        raise AssertionError(f"granian never had a port of its own: {failures}")

    yield start
    for run in runs:
        run.kill()


def serve_then_stop(run: HostRun, url: str, requests: int) -> int:
    """Traffic until both workers answered, then SIGTERM; the number of requests sent."""
    workers, sent = run.drive_every_worker(url, "wsgi", requests, WORKERS)
    assert len(workers) == WORKERS, f"the traffic should have reached both workers: {workers}"
    run.wait_no_zombie()
    run.stop(signal.SIGTERM)
    run.assert_clean_stop()
    run.delivered_exactly({"wsgi": sent})
    run.assert_nothing_left()
    run.report(sent, workers=len(workers))
    return sent


def test_granian_workers_deliver_every_event_once(granian: Start) -> None:
    run, url = granian()
    serve_then_stop(run, url, REQUESTS)


@pytest.mark.pipeline_per_machine
def test_granian_workers_share_one_pipeline(granian: Start, collector: CollectorProcess) -> None:
    """Issue 10: both workers' events go through one flusher, in shared batches."""
    run, url = granian()
    sent = serve_then_stop(run, url, REQUESTS // 2)
    assert_one_pipeline(run.census, collector, sent, FLUSH_AT)
