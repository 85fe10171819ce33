"""gunicorn ``-k gevent``, for real, with and without ``--preload``: real traffic, a real stop.

Each test starts ``gunicorn -k gevent --workers 2 [--preload] servers_web:app``
with no config file and none of trubrics-mp's hooks, as a user who only switched
the worker class would (the port is read from gunicorn's ``Listening at:`` line).
The gevent worker monkey-patches the standard library (``socket``, ``select``,
``subprocess``...) when it starts: without ``--preload`` each worker imports the
app afterwards, makes its client with patched modules and owns a flusher; with
``--preload`` the master makes the client before any patching and every worker
uses the master's flusher.
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
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
READY = r"Listening at: (http://127\.0\.0\.1:\d+)"
BOOTED = r"Booting worker with pid: (\d+)"
WORKERS = 2
FLUSH_AT = 50
# A flush interval longer than any test: batches are cut by size, or at the stop.
OPTIONS = {"flush_at": FLUSH_AT, "flush_interval": 600, "shutdown_timeout": 30}
DEADLINE_S = 60.0
REQUESTS = 2000

Start = Callable[[bool], tuple[HostRun, str]]


@pytest.fixture
def gevent(tmp_path: Path, collector: CollectorProcess) -> Iterator[Start]:
    """Start gunicorn with gevent workers as a user would; killed at teardown if still up."""
    runs: list[HostRun] = []

    def start(preload: bool) -> tuple[HostRun, str]:
        flags = ["--preload"] if preload else []
        name = " ".join(["gunicorn -k gevent", f"--workers {WORKERS}", *flags])
        run = HostRun(name, collector, OPTIONS)
        runs.append(run)
        argv = [GUNICORN, "-k", "gevent", "--workers", str(WORKERS), *flags]
        argv += ["--bind", "127.0.0.1:0", "--chdir", str(APP_DIR)]
        argv += ["--control-socket", str(tmp_path / "gunicorn.ctl"), "servers_web:app"]
        server = ServerProcess(argv, name="gunicorn", ready=READY, cwd=tmp_path, env=run.env())
        url = run.start(server).ready_match.group(1)
        server.wait_for(BOOTED, WORKERS, DEADLINE_S)
        wait_http(f"{url}/pid?test={run.test_id}", DEADLINE_S)
        return run, url

    yield start
    for run in runs:
        run.kill()


def serve_then_stop(run: HostRun, url: str, requests: int) -> int:
    """Traffic until both workers answered (a gevent worker may take a whole burst),
    then SIGTERM; every event delivered once. The number of requests sent."""
    workers, sent = run.drive_every_worker(url, "gevent", requests, WORKERS)
    assert len(workers) == WORKERS, f"the traffic should have reached both workers: {workers}"
    run.wait_no_zombie()
    run.stop(signal.SIGTERM)
    run.assert_clean_stop()
    run.delivered_exactly({"gevent": sent})
    run.assert_nothing_left()
    run.report(sent, workers=len(workers))
    return sent


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_gevent_workers_deliver_every_event_once(gevent: Start, preload: bool) -> None:
    run, url = gevent(preload)
    serve_then_stop(run, url, REQUESTS)


@pytest.mark.parametrize(
    "preload",
    [
        pytest.param(False, id="no-preload", marks=pytest.mark.pipeline_per_machine),
        pytest.param(True, id="preload"),  # the master's flusher: true already
    ],
)
def test_gevent_workers_share_one_pipeline(
    gevent: Start, collector: CollectorProcess, preload: bool
) -> None:
    """Both workers' events go through one flusher, in shared batches (issue 10 for the
    workers that make their own client)."""
    run, url = gevent(preload)
    sent = serve_then_stop(run, url, REQUESTS // 4)
    assert_one_pipeline(run.census, collector, sent, FLUSH_AT)
