"""uvicorn ``--workers 4``, for real: the uvicorn command, real HTTP traffic, real stops.

Each test starts ``uvicorn servers_web:asgi_app --workers 4 --port 0`` (the app of
``tests/host/apps/servers/``; the port is read from uvicorn's ``Uvicorn running on``
line). uvicorn's supervisor spawns the workers and never imports the app: each
worker imports it and makes a client of its own. Every request tracks one event
with a unique ``id``. Then the host is stopped as a user does: SIGTERM to the
supervisor (systemd, Docker), or SIGINT to the whole process group (Ctrl-C).

uvicorn workers die by the signal they re-raise after their graceful shutdown, so
no ``atexit`` runs in them: the app closes its client in the lifespan shutdown, as
``docs/deployment/uvicorn.md`` says, and each worker prints that it did.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from support.collector import CollectorProcess
from support.host_runs import HostRun
from support.hosts import wait_http
from support.pipelines import assert_one_pipeline
from support.processes import ServerProcess

APP_DIR = Path(__file__).resolve().parent / "apps" / "servers"
UVICORN = str(Path(sys.executable).with_name("uvicorn"))
READY = r"Uvicorn running on (http://127\.0\.0\.1:\d+)"
STARTED = r"Application startup complete\."
CLOSED = r"TRUBRICS-TEST-LIFESPAN-CLOSED pid=(\d+) ok=(\w+)"
WORKERS = 4
FLUSH_AT = 50
# A flush interval longer than any test: batches are cut by size, or at the stop.
OPTIONS = {"flush_at": FLUSH_AT, "flush_interval": 600, "shutdown_timeout": 30}
DEADLINE_S = 60.0
REQUESTS = 2000

Start = Callable[..., tuple[HostRun, str]]


@pytest.fixture
def uvicorn(tmp_path: Path, collector: CollectorProcess) -> Iterator[Start]:
    """Start uvicorn as a user would; whatever still runs at teardown is killed."""
    runs: list[HostRun] = []

    def start(lifespan_close: bool = True) -> tuple[HostRun, str]:
        label = "" if lifespan_close else ", no lifespan close"
        run = HostRun(f"uvicorn --workers {WORKERS}{label}", collector, OPTIONS)
        runs.append(run)
        argv = [UVICORN, "servers_web:asgi_app", "--app-dir", str(APP_DIR)]
        argv += ["--workers", str(WORKERS), "--host", "127.0.0.1", "--port", "0"]
        argv += ["--no-access-log"]
        env = run.env(TRUBRICS_TEST_LIFESPAN_CLOSE="1" if lifespan_close else "0")
        server = ServerProcess(argv, name="uvicorn", ready=READY, cwd=tmp_path, env=env)
        url = run.start(server).ready_match.group(1)
        server.wait_for(STARTED, WORKERS, DEADLINE_S)
        wait_http(f"{url}/pid?test={run.test_id}", DEADLINE_S)
        return run, url

    yield start
    for run in runs:
        run.kill()


def serve_then_stop(
    run: HostRun, url: str, requests: int, ctrl_c: bool, lifespan_close: bool = True
) -> set[int]:
    """Traffic, the stop, and the checks every uvicorn run makes; the workers that served."""
    workers = run.drive(url, "asgi", requests)
    assert len(workers) >= 2, f"the traffic should have reached several workers: {workers}"
    run.wait_no_zombie()
    if ctrl_c:
        run.stop(signal.SIGINT, group=True)
    else:
        run.stop(signal.SIGTERM)
    run.assert_clean_stop()
    closed = {int(m.group(1)): m.group(2) for m in run.host.matches(CLOSED)}
    if lifespan_close:
        assert workers <= set(closed), f"workers whose lifespan shutdown did not run: {closed}"
        assert set(closed.values()) == {"True"}, f"a worker's close() did not deliver: {closed}"
    else:
        assert not closed
    run.delivered_exactly({"asgi": requests})
    run.assert_nothing_left()
    run.report(requests, workers=len(workers))
    return workers


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm-supervisor", "sigint-group"])
def test_uvicorn_workers_deliver_every_event_once(uvicorn: Start, ctrl_c: bool) -> None:
    run, url = uvicorn()
    serve_then_stop(run, url, REQUESTS, ctrl_c)


def test_without_the_lifespan_close_each_workers_flusher_still_delivers(uvicorn: Start) -> None:
    """No close() anywhere: each worker dies by its re-raised SIGTERM (no ``atexit``),
    and what it tracked is in its flusher, which delivers once its owner is gone."""
    run, url = uvicorn(lifespan_close=False)
    serve_then_stop(run, url, REQUESTS // 2, ctrl_c=False, lifespan_close=False)


@pytest.mark.pipeline_per_machine
def test_uvicorn_workers_share_one_pipeline(uvicorn: Start, collector: CollectorProcess) -> None:
    """Issue 10: the four workers' events go through one flusher, in shared batches."""
    run, url = uvicorn()
    serve_then_stop(run, url, REQUESTS // 4, ctrl_c=False)
    assert_one_pipeline(run.census, collector, REQUESTS // 4, FLUSH_AT)
