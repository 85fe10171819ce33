"""dramatiq for real: ``dramatiq servers_dramatiq --processes 2 --threads 2`` on a real Redis.

The broker module is ``tests/host/apps/servers/servers_dramatiq.py``; the test
enqueues messages by actor name with a broker of its own (it never imports the
module). dramatiq's main process imports nothing of the app: each worker process
(forked by default, spawned with ``--use-spawn``) imports it, so each makes a
client of its own. Forked workers leave through ``os._exit`` (no ``atexit``: their
flushers deliver once their owner is gone); spawned ones through ``sys.exit``,
whose ``atexit`` closes the client. Stopped with SIGTERM to the main process, as
dramatiq documents it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from support.collector import CollectorProcess
from support.host_runs import HostRun
from support.pipelines import assert_one_pipeline
from support.processes import ServerProcess
from support.redis_server import RedisServer

APP_DIR = Path(__file__).resolve().parent / "apps" / "servers"
DRAMATIQ = str(Path(sys.executable).with_name("dramatiq"))
ACTOR = "trubrics_test_track"  # servers_dramatiq.ACTOR
READY = r"Worker process is ready for action\."
TRACKED = r"TRUBRICS-TEST-TRACKED src={src} pid=(\d+)"
PROCESSES = 2
FLUSH_AT = 50
# A flush interval longer than any test: batches are cut by size, or at the stop.
OPTIONS = {"flush_at": FLUSH_AT, "flush_interval": 600, "shutdown_timeout": 30}
DEADLINE_S = 60.0
MESSAGES, PER_MESSAGE = 40, 5
# Each message holds its thread that long: one worker process alone would take 2 s,
# while an idle one polls again within dramatiq's backoff (at most 1 s by default).
HOLD_S = 0.1

Start = Callable[[bool], tuple[HostRun, Any]]


@pytest.fixture
def dramatiq_worker(tmp_path: Path, collector: CollectorProcess) -> Iterator[Start]:
    """A private Redis, and dramatiq started as a user would; killed at teardown if up."""
    redis_server = RedisServer(tmp_path).start()
    runs: list[HostRun] = []
    brokers: list[Any] = []

    def start(spawn: bool) -> tuple[HostRun, Any]:
        flags = ["--use-spawn"] if spawn else []
        name = " ".join(["dramatiq", f"--processes {PROCESSES} --threads 2", *flags])
        run = HostRun(name, collector, OPTIONS)
        runs.append(run)
        argv = [DRAMATIQ, "servers_dramatiq", "--path", str(APP_DIR)]
        argv += ["--processes", str(PROCESSES), "--threads", "2", *flags]
        env = run.env(TRUBRICS_TEST_BROKER=redis_server.url)
        server = ServerProcess(argv, name="dramatiq", ready=READY, cwd=tmp_path, env=env)
        run.start(server).wait_for(READY, PROCESSES, DEADLINE_S)
        make_broker: Any = RedisBroker  # its __init__ has no type hints
        brokers.append(make_broker(url=redis_server.url))
        return run, brokers[-1]

    try:
        yield start
    finally:
        for run in runs:
            run.kill()
        for broker in brokers:
            broker.close()
        redis_server.stop()


def send_and_stop(run: HostRun, broker: Any, messages: int) -> set[int]:
    """``messages`` messages, each tracking PER_MESSAGE events; SIGTERM once all tracked.
    The pids of the worker processes that tracked."""
    for i in range(messages):
        args = (run.test_id, f"message-{i}", PER_MESSAGE, HOLD_S)
        message: Any = Message(
            queue_name="default", actor_name=ACTOR, args=args, kwargs={}, options={}
        )
        broker.enqueue(message)
    tracked = run.host.wait_for(TRACKED.format(src=r"message-\d+"), messages, DEADLINE_S)
    workers = {int(m.group(1)) for m in tracked}
    run.wait_no_zombie()
    run.stop(signal.SIGTERM)
    run.assert_clean_stop()
    run.delivered_exactly({f"message-{i}": PER_MESSAGE for i in range(messages)})
    run.assert_nothing_left()
    run.report(messages * PER_MESSAGE, workers=len(workers))
    return workers


@pytest.mark.parametrize("spawn", [False, True], ids=["fork", "spawn"])
def test_dramatiq_workers_deliver_every_event_once(dramatiq_worker: Start, spawn: bool) -> None:
    run, broker = dramatiq_worker(spawn)
    workers = send_and_stop(run, broker, MESSAGES)
    assert len(workers) == PROCESSES, f"both worker processes should have tracked: {workers}"


@pytest.mark.pipeline_per_machine
@pytest.mark.parametrize("spawn", [False, True], ids=["fork", "spawn"])
def test_dramatiq_workers_share_one_pipeline(
    dramatiq_worker: Start, collector: CollectorProcess, spawn: bool
) -> None:
    """Issue 10: both worker processes' events go through one flusher, in shared batches."""
    run, broker = dramatiq_worker(spawn)
    send_and_stop(run, broker, MESSAGES)
    assert_one_pipeline(run.census, collector, MESSAGES * PER_MESSAGE, FLUSH_AT)
