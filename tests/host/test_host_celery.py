"""Celery for real: ``celery -A ... worker`` subprocesses, tasks sent through a real Redis.

The apps are ``tests/host/apps/celery/tasks_import.py`` (client made at import time),
``tasks_signals.py`` (``trubrics_mp.integrations.celery.setup``) and
``tasks_children.py`` (no hook: each pool process makes its own client at its first
task). The pytest process only sends tasks by name and reads results through Redis
(it imports no app, so it never makes a client); each worker is stopped as
production does, with SIGTERM to its main process (warm shutdown), and must exit by
itself. One flusher serves the whole worker (``flushers()``), outside it: no child
of the main process, in a session and process group of its own; once the worker is
gone it leaves by itself, with status 0, and is reaped (no zombie).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import psutil
import pytest
from celery import Celery
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.host_flushers import the_flusher, wait_flushers_left
from support.processes import READER_THREAD_PREFIX, ServerProcess, poll_until
from support.redis_server import RedisServer

APPS_DIR = Path(__file__).resolve().parent / "apps" / "celery"
TRACK, HANG, STATS = "trubrics_test.track", "trubrics_test.hang", "trubrics_test.stats"
DEADLINE_S = 90.0
FLUSH_AT = 10
LONG_INTERVAL_S = 300.0  # only full batches are sent before the stop
DEFAULT_LINGER = ""  # TRUBRICS_MP_LINGER unset: the client's default linger (5 s)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def producer(redis_server: RedisServer) -> Iterator[Celery]:
    """A Celery app in the test process that only sends tasks and reads results.

    ``Celery.close()`` closes no connection: the broker pool, the result consumer's
    pub/sub and the backend's pool are closed here, and checked to be closed.
    """
    app = Celery("producer", broker=redis_server.url, backend=redis_server.url)
    app.conf.broker_connection_retry_on_startup = True
    threads = set(threading.enumerate())
    try:
        yield app
    finally:
        # celery-types lacks these (kombu's Resource, the Redis backend's attributes).
        pool: Any = app.pool
        backend: Any = app.backend
        pool.force_close_all()
        backend.result_consumer.stop()
        backend.client.connection_pool.disconnect()
        app.close()
        assert redis_connections(redis_server.port) == []
        new = [t for t in threading.enumerate() if t not in threads]
        new = [t for t in new if not t.name.startswith(READER_THREAD_PREFIX)]
        assert new == [], f"threads left running in the test process: {new}"


def redis_connections(port: int) -> list[Any]:
    """This process's TCP connections to the Redis server still open."""
    connections = psutil.Process().net_connections(kind="tcp")
    return [c for c in connections if c.raddr and c.raddr[1] == port]


class CeleryWorker(ServerProcess):
    """``celery -A APP worker`` in its own session; output kept in ``lines``."""

    def __init__(
        self, app: str, pool: str, broker: str, host: str, *extra: str, linger: Optional[str]
    ) -> None:
        self.label = " ".join(["-A", app, "worker", "--pool", pool, *extra])
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", pool]
        argv += ["--loglevel", "INFO", "--hostname", f"w{uuid.uuid4().hex[:8]}@%h"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", *extra]
        path = os.pathsep.join([str(APPS_DIR), os.environ.get("PYTHONPATH", "")])
        env = {
            "PYTHONPATH": path.rstrip(os.pathsep),
            "TRUBRICS_TEST_BROKER": broker,
            "TRUBRICS_TEST_HOST": host,
            "TRUBRICS_TEST_FLUSH_AT": str(FLUSH_AT),
            "TRUBRICS_TEST_FLUSH_INTERVAL": str(LONG_INTERVAL_S),
        }
        if linger is not None:
            env["TRUBRICS_MP_LINGER"] = linger
        super().__init__(argv, name="celery worker", ready=r" ready\.", cwd=APPS_DIR, env=env)

    def warm_stop(self, group: bool = False) -> Optional[int]:
        """SIGTERM to the main process (Docker, ``celery multi``) or to every process
        of the group (systemd's default ``KillMode=control-group``); it must exit by
        itself."""
        if group:
            self.signal_group(signal.SIGTERM)
        code = self.stop(DEADLINE_S, sig=None if group else signal.SIGTERM)
        assert not self.killed, f"no exit {DEADLINE_S}s after SIGTERM:\n{self.output_text}"
        return code


StartWorker = Callable[..., CeleryWorker]


@pytest.fixture
def start_worker(redis_server: RedisServer, collector: CollectorProcess) -> Iterator[StartWorker]:
    started: list[CeleryWorker] = []

    def start(app: str, pool: str, *extra: str) -> CeleryWorker:
        # When only the pool processes make a client, nothing is connected at the moment
        # every child recycles at once: the default linger bridges it.
        linger = DEFAULT_LINGER if app == "tasks_children" else None
        worker = CeleryWorker(app, pool, redis_server.url, collector.url, *extra, linger=linger)
        started.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


def send_track_tasks(producer: Celery, prefix: str, tasks: int, count: int) -> dict[str, int]:
    """``tasks`` tasks that each track ``count`` events; waits for all their results."""
    results = [producer.send_task(TRACK, args=[f"{prefix}-{i}", count, 0.05]) for i in range(tasks)]
    for result in results:
        result.get(timeout=DEADLINE_S)
    return {f"{prefix}-{i}": count for i in range(tasks)}


def pipeline_stats(producer: Celery) -> dict[str, Any]:
    found: dict[str, Any] = producer.send_task(STATS).get(timeout=DEADLINE_S)
    return found


def wait_received(producer: Celery, events: int) -> dict[str, Any]:
    """Ask for stats until the flusher has read ``events`` events; the last answer."""
    answers: list[dict[str, Any]] = []

    def received() -> int:
        return sum(answers[-1]["received_by_pid"].values()) if answers else 0

    def enough() -> bool:
        answers.append(pipeline_stats(producer))
        return received() >= events

    poll_until(enough, DEADLINE_S, lambda: f"{events} events read; last stats: {answers[-1:]}")
    assert received() == events, answers[-1]
    return answers[-1]


def pids_per_batch(events: list[dict[str, Any]]) -> dict[int, set[int]]:
    batches: dict[int, set[int]] = collections.defaultdict(set)
    for event in events:
        batches[event["batch_id"]].add(event["properties"]["pid"])
    return batches


def assert_stopped_cleanly(
    worker: CeleryWorker, flusher_pid: int, expected_error: str = "", group: bool = False
) -> None:
    """Exit status 0 on its own, no warning of ours, no traceback but in log records that
    contain ``expected_error`` (Celery's own); then the flusher leaves by itself."""
    code = worker.warm_stop(group)
    assert code == 0, worker.output_text
    wait_flushers_left({flusher_pid})
    for record in log_records(worker.output_text):
        if "Traceback" in record:
            assert expected_error and expected_error in record, worker.output_text
    assert "trubrics_mp" not in worker.output_text, (
        worker.output_text
    )  # no warning nor error of ours


def log_records(output: str) -> list[str]:
    """The worker's output cut into records, each starting at a ``[date ...`` line."""
    records: list[str] = []
    for line in output.splitlines():
        if line.startswith("[") or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def stop_and_check(
    worker: CeleryWorker,
    producer: Celery,
    collector: CollectorProcess,
    expected: dict[str, int],
    stats: dict[str, Any],
    expected_error: str = "",
    group: bool = False,
) -> list[dict[str, Any]]:
    """Track a partial batch, stop the worker: it must be delivered by the shutdown."""
    expected = {**expected, **send_track_tasks(producer, "tail", 1, FLUSH_AT // 2)}
    assert_stopped_cleanly(worker, stats["flusher_pid"], expected_error, group)
    events = wait_exactly_once(collector, expected)
    print(  # reported with `pytest -rP`: the numbers of the Celery page
        f"celery {worker.label}: {sum(expected.values())} events tracked, {len(events)} stored "
        f"once, {len(collector.batches())} requests, {'group ' if group else ''}"
        f"SIGTERM to exit {worker.stop_seconds:.2f}s"
    )
    return events


def check_one_flusher(worker: CeleryWorker, stats: dict[str, Any]) -> None:
    """One flusher for the worker, outside it, never restarted, nothing dropped."""
    assert the_flusher(worker.pid).pid == stats["flusher_pid"]
    assert stats["flusher_restarts"] == 0
    assert stats["dropped"] == {}


def assert_full_batches_but_one_per_exit(collector: CollectorProcess, exits: int) -> None:
    """Batches of ``FLUSH_AT`` events, except a partial one at most per child that left:
    its ``close()`` (``worker_process_shutdown``) is a flush, which sends the pipeline's
    open batches at once, and so does the flusher when the last connection closes."""
    partial = [b["n_events"] for b in collector.batches() if b["n_events"] != FLUSH_AT]
    assert len(partial) <= exits, f"{len(partial)} partial batches for {exits} exits: {partial}"


APPS = ["tasks_import", "tasks_signals"]
PREFORK_APPS = [*APPS, "tasks_children"]


@pytest.mark.parametrize("app", PREFORK_APPS)
def test_prefork_pool_processes_share_one_flusher(
    app: str, producer: Celery, collector: CollectorProcess, start_worker: StartWorker
) -> None:
    """Both children feed one flusher, whichever process made the client; batches fill
    across children."""
    worker = start_worker(app, "prefork", "--concurrency", "2")
    expected = send_track_tasks(producer, "task", 20, 3)
    events = wait_exactly_once(collector, expected)
    stats = pipeline_stats(producer)
    check_one_flusher(worker, stats)
    pool_pids = {e["properties"]["pid"] for e in events}
    assert len(pool_pids) == 2 and worker.pid not in pool_pids
    assert {int(pid) for pid in stats["received_by_pid"]} == pool_pids
    # Long interval: only full batches so far, filled by both pool processes together.
    assert len(collector.batches()) == 60 // FLUSH_AT
    assert any(len(pids) == 2 for pids in pids_per_batch(events).values())
    stop_and_check(worker, producer, collector, expected, stats)
    assert len(collector.batches()) == 60 // FLUSH_AT + 1  # the tail, sent at shutdown


@pytest.mark.parametrize("pool", ["threads", "solo"])
@pytest.mark.parametrize("app", APPS)
def test_threads_and_solo_pools_use_the_main_process(
    app: str, pool: str, producer: Celery, collector: CollectorProcess, start_worker: StartWorker
) -> None:
    """No pool process: the main process tracks; the flusher is still outside it."""
    extra = ("--concurrency", "4") if pool == "threads" else ()
    worker = start_worker(app, pool, *extra)
    expected = send_track_tasks(producer, pool, 20, 3)
    events = wait_exactly_once(collector, expected)
    stats = pipeline_stats(producer)
    check_one_flusher(worker, stats)
    assert {e["properties"]["pid"] for e in events} == {worker.pid}
    assert len(collector.batches()) == 60 // FLUSH_AT
    stop_and_check(worker, producer, collector, expected, stats)
    assert len(collector.batches()) == 60 // FLUSH_AT + 1


@pytest.mark.parametrize("app", PREFORK_APPS)
def test_max_tasks_per_child_recycling(
    app: str, producer: Celery, collector: CollectorProcess, start_worker: StartWorker
) -> None:
    """Recycled children (``os._exit``) lose nothing; new ones join the same flusher, also
    when each child makes its own client (``tasks_children``).

    A child's exit may send the open batch short (see
    :func:`assert_full_batches_but_one_per_exit`), so the events that follow it wait
    for a full batch, or for the stop: the stop is what delivers the last ones.
    """
    worker = start_worker(app, "prefork", "--concurrency", "2", "--max-tasks-per-child", "3")
    expected = send_track_tasks(producer, "recycled", 12, 5)
    stats = wait_received(producer, 60)
    check_one_flusher(worker, stats)
    events = stop_and_check(worker, producer, collector, expected, stats)
    pool_pids = {e["properties"]["pid"] for e in events if e["properties"]["src"] != "tail-0"}
    assert len(pool_pids) >= 4  # 12 tasks, at most 3 per child
    assert {int(pid) for pid in stats["received_by_pid"]} == pool_pids
    assert_full_batches_but_one_per_exit(collector, exits=len(pool_pids) + 1)


@pytest.mark.parametrize("app", APPS)
def test_hard_time_limit_kill_loses_nothing_tracked_before(
    app: str, producer: Celery, collector: CollectorProcess, start_worker: StartWorker
) -> None:
    """billiard SIGKILLs children at the hard limit: what they tracked is delivered."""
    worker = start_worker(app, "prefork", "--concurrency", "2")
    hung = [producer.send_task(HANG, args=[f"hung-{i}", 5], time_limit=2) for i in range(2)]
    for result in hung:
        with pytest.raises(Exception) as raised:
            result.get(timeout=DEADLINE_S)
        assert type(raised.value).__name__ == "TimeLimitExceeded"
    expected = {"hung-0": 5, "hung-1": 5, **send_track_tasks(producer, "after", 10, 3)}
    events = wait_exactly_once(collector, expected)
    stats = pipeline_stats(producer)
    check_one_flusher(worker, stats)
    killed = {e["properties"]["pid"] for e in events if e["properties"]["src"].startswith("hung")}
    assert len(killed) == 2
    assert len(collector.batches()) == 40 // FLUSH_AT
    stop_and_check(worker, producer, collector, expected, stats, "TimeLimitExceeded")
    assert worker.output_text.count("Hard time limit (2s) exceeded") == 2
    for pid in killed:  # billiard's own report of each kill
        assert f"pid:{pid} exited with 'signal" in worker.output_text, worker.output_text


@pytest.mark.parametrize("flusher_too", [False, True], ids=["group", "group-and-flusher"])
def test_sigterm_to_the_whole_process_group(
    producer: Celery, collector: CollectorProcess, start_worker: StartWorker, flusher_too: bool
) -> None:
    """SIGTERM to every process of the worker's group (``kill -TERM -PGID``) does not
    reach the flusher, in a group of its own. Signalled too (``group-and-flusher``: all
    the processes of the service's cgroup, systemd's ``KillMode=control-group``), it
    keeps serving for ``shutdown_timeout``: the children's ``close()`` still delivers."""
    worker = start_worker("tasks_signals", "prefork", "--concurrency", "2")
    expected = send_track_tasks(producer, "group", 20, 3)
    wait_exactly_once(collector, expected)
    stats = pipeline_stats(producer)
    check_one_flusher(worker, stats)
    flusher = psutil.Process(stats["flusher_pid"])
    if flusher_too:
        flusher.send_signal(signal.SIGTERM)  # just before the group's, as a cgroup kill
    stop_and_check(worker, producer, collector, expected, stats, group=True)
    assert len(collector.batches()) == 60 // FLUSH_AT + 1


def test_a_flusher_started_by_a_pool_child_does_not_die_with_it(
    collector: CollectorProcess,
) -> None:
    """Celery gives its children a parent-death signal of SIGKILL; the flusher a child
    starts (fork + exec, in a new session) does not inherit it, and delivers after the
    child's ``os._exit``."""
    script = APPS_DIR / "pdeathsig_starter.py"
    done = subprocess.run(
        [sys.executable, str(script), collector.url, "7"],
        stdout=subprocess.PIPE,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 0 and int(done.stdout) > 0, done
    wait_exactly_once(collector, {"pdeathsig": 7})  # flush_at 100: sent by the drain
    wait_flushers_left({int(done.stdout)})
