"""gunicorn, for real: the gunicorn command, real HTTP traffic, real stops.

Each test starts ``gunicorn -c conf.py app:app --bind 127.0.0.1:0`` (the port is
read from gunicorn's own ``Listening at:`` line) with the apps and config files of
``tests/host/apps/gunicorn/``; every request makes a worker call ``track()`` or
``track_llm()`` with ``{"src": ..., "seq": ...}`` from the query string. Then the
master gets SIGTERM, as production stops it, and the test checks:

- every event reached the local collector exactly once;
- one flusher served every worker (``stats()``, asked through ``/stats``), and it
  is the only one running for the test's pipeline (``flushers()``), outside the
  host: not gunicorn's child, in a session and process group of its own;
- the stop was graceful: exit code 0, no traceback, no SIGKILL, the app's
  ``atexit`` marker printed by every worker that served (a SIGKILLed worker runs
  no ``atexit``); then the flusher left by itself, with status 0, and was reaped
  (no zombie). Stop seconds are printed, not asserted.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import psutil
import pytest
from support.checks import counts, wait_exactly_once
from support.collector import CollectorProcess
from support.host_flushers import the_flusher, wait_flushers_left, wait_reaped
from support.hosts import Reply, assert_no_traceback, drive, get, wait_http
from support.processes import ServerProcess, poll_until

APP_DIR = Path(__file__).resolve().parent / "apps" / "gunicorn"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
READY = r"Listening at: (http://127\.0\.0\.1:\d+)"
API_KEY = "test-api-key-gunicorn-5e1d07"  # the one in apps/gunicorn/analytics.py
EXIT_MARKER = r"TRUBRICS-TEST-EXIT pid=(\d+)"
LIFESPAN_MARKER = r"TRUBRICS-TEST-LIFESPAN-CLOSED pid=(\d+) ok=True"
# gunicorn prints this itself when it aborts a worker whose request outlived ``timeout``.
ABORT_TRACEBACK = r"in handle_abort\n\s+sys\.exit\(1\)\nSystemExit: 1$"
FLUSH_AT = 20
# A flush interval longer than any test: batches are cut by size, or at the stop.
OPTIONS = {"flush_at": FLUSH_AT, "flush_interval": 600, "shutdown_timeout": 30}
DEADLINE_S = 60.0
DEFAULT_LINGER = ""  # TRUBRICS_MP_LINGER unset: the client's default linger (5 s)


@dataclasses.dataclass
class Server:
    host: ServerProcess
    url: str
    label: str
    flusher_pids: set[int] = dataclasses.field(default_factory=set)

    def stats(self) -> dict[str, Any]:
        """``/stats`` from whichever worker answers: its pid and its pipeline's stats."""
        status, body = get(self.url + "/stats")
        assert status == 200, body
        answer: dict[str, Any] = json.loads(body)
        if answer["stats"]["flusher_pid"] is not None:
            self.flusher_pids.add(answer["stats"]["flusher_pid"])
        return answer


Start = Callable[..., Server]


@pytest.fixture
def gunicorn(tmp_path: Path, collector: CollectorProcess) -> Iterator[Start]:
    """Start gunicorn as a user would; whatever is still running at teardown is killed."""
    started: list[ServerProcess] = []

    def start(conf: str, *flags: str, app: str = "app:app", linger: Optional[str] = None) -> Server:
        """``linger``: ``TRUBRICS_MP_LINGER`` for the host (default: the test's short one)."""
        argv = [GUNICORN, "-c", str(APP_DIR / conf), "--bind", "127.0.0.1:0"]
        argv += ["--chdir", str(APP_DIR), "--control-socket", str(tmp_path / "gunicorn.ctl")]
        env = {"TRUBRICS_TEST_URL": collector.url, "TRUBRICS_TEST_OPTIONS": json.dumps(OPTIONS)}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if linger is not None:
            env["TRUBRICS_MP_LINGER"] = linger
        host = ServerProcess(
            [*argv, *flags, app], name="gunicorn", ready=READY, cwd=tmp_path, env=env
        )
        started.append(host)
        url = host.start(DEADLINE_S).ready_match.group(1)
        wait_http(url + "/pid", DEADLINE_S)
        return Server(host, url, " ".join([conf, *flags, app]))

    yield start
    for host in started:
        host.kill()


# -- checks ------------------------------------------------------------------------
def served_by(replies: list[Reply]) -> set[int]:
    """The worker pids that answered; every request must have succeeded."""
    failed = [r for r in replies if r.status != 200]
    assert not failed, f"{len(failed)} requests failed, e.g. {failed[:3]}"
    return {json.loads(r.body)["pid"] for r in replies}


def wait_one_flusher(server: Server, workers: set[int], events: int) -> dict[str, Any]:
    """Poll ``/stats`` until ONE flusher has received ``events`` from all ``workers``."""
    stats: dict[str, Any] = {}
    received: dict[int, int] = {}

    def heard_everyone() -> bool:
        stats.update(server.stats()["stats"])
        received.clear()
        received.update({int(pid): n for pid, n in stats["received_by_pid"].items()})
        return workers <= set(received) and sum(received.values()) >= events

    poll_until(heard_everyone, DEADLINE_S, lambda: f"workers {workers}, flusher saw {received}")
    assert len(server.flusher_pids) == 1, f"several flushers answered: {server.flusher_pids}"
    assert sum(received.values()) == events, received
    assert the_flusher(server.host.pid).pid == stats["flusher_pid"]
    return dict(stats)


def stats_from_workers(server: Server, n_workers: int) -> list[dict[str, Any]]:
    """``/stats`` answers, asked concurrently until ``n_workers`` distinct workers answered."""
    answers: list[dict[str, Any]] = []

    def all_answered() -> bool:
        for reply in drive(server.url + "/stats?seq={seq}", 8, concurrency=4):
            assert reply.status == 200, reply
            answers.append(json.loads(reply.body))
        return len({a["pid"] for a in answers}) >= n_workers

    poll_until(all_answered, DEADLINE_S, lambda: f"{n_workers} workers; answers: {answers}")
    for answer in answers:
        server.flusher_pids.add(answer["stats"]["flusher_pid"])
    return answers


def stop_and_check(
    server: Server,
    collector: CollectorProcess,
    expected: dict[str, int],
    workers: set[int],
    exit_marker: str = EXIT_MARKER,
    allow: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """SIGTERM the master as production does, then check the stop and the deliveries."""
    server.host.stop(DEADLINE_S)
    output = server.host.output_text
    assert not server.host.killed, f"still running {DEADLINE_S} s after SIGTERM:\n{output}"
    assert server.host.returncode == 0, output
    assert_no_traceback(output, allow)
    assert API_KEY not in output
    assert "SIGKILL" not in output and "undelivered" not in output, output
    exited = {int(m.group(1)) for m in server.host.matches(exit_marker)}
    assert workers <= exited, f"workers that did not exit cleanly: {workers - exited}\n{output}"
    wait_flushers_left(server.flusher_pids)  # by itself, once no worker is connected
    events = wait_exactly_once(collector, expected)
    seen = counts(events)
    report = {
        "config": server.label,
        "sent": sum(expected.values()),
        "delivered": sum(seen.values()),
        "duplicated": sum(n - 1 for n in seen.values()),
        "requests": len(collector.batches()),
        "stop_s": round(server.host.stop_seconds or 0.0, 2),
        "workers": len(workers),
        "flushers": len(server.flusher_pids),
    }
    print("GUNICORN-RESULT " + json.dumps(report))
    return events


def batches_per_kind(collector: CollectorProcess) -> dict[str, int]:
    found: dict[str, int] = {}
    for batch in collector.batches():
        found[batch["kind"]] = found.get(batch["kind"], 0) + 1
    return found


def assert_full_batches_but_one_per_exit(collector: CollectorProcess, exits: int) -> None:
    """Batches of ``FLUSH_AT`` events, shared by the workers, except a partial one at most
    per worker exit: a worker's ``close()`` is a flush, which sends the pipeline's open
    batches at once (with a long flush interval nothing else cuts a batch short)."""
    partial = [b["n_events"] for b in collector.batches() if b["n_events"] != FLUSH_AT]
    assert len(partial) <= exits, f"{len(partial)} partial batches for {exits} exits: {partial}"


# -- tests ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "conf, flags",
    [
        pytest.param("conf_plain.py", [], id="no-preload-without-hooks"),
        pytest.param("conf_plain.py", ["--preload"], id="preload-without-hooks"),
        pytest.param("conf_hooks.py", ["--preload"], id="preload-with-hooks"),
        pytest.param("conf_hooks.py", [], id="no-preload-with-hooks"),
    ],
)
def test_sync_workers_share_one_flusher(
    gunicorn: Start, collector: CollectorProcess, conf: str, flags: list[str]
) -> None:
    """Whoever makes the client (the master, or each worker), every worker finds one flusher."""
    server = gunicorn(conf, "--workers", "3", *flags)
    replies = drive(server.url + "/track?src=sync&seq={seq}", 200, concurrency=6)
    replies += drive(server.url + "/llm?src=sync-llm&seq={seq}", 40, concurrency=6)
    workers = served_by(replies)
    assert len(workers) >= 2, "the traffic should have reached several workers"
    wait_one_flusher(server, workers, 240)
    stop_and_check(server, collector, {"sync": 200, "sync-llm": 40}, workers)
    # One flusher batches for everyone: every request is a full batch of FLUSH_AT.
    assert batches_per_kind(collector) == {"event": 200 // FLUSH_AT, "llm_event": 40 // FLUSH_AT}


def test_gthread_workers_share_one_flusher(gunicorn: Start, collector: CollectorProcess) -> None:
    server = gunicorn(
        "conf_hooks.py", "--workers", "2", "--worker-class", "gthread", "--threads", "4"
    )
    workers = served_by(drive(server.url + "/track?src=gthread&seq={seq}", 240, concurrency=8))
    wait_one_flusher(server, workers, 240)
    stop_and_check(server, collector, {"gthread": 240}, workers)
    assert batches_per_kind(collector) == {"event": 240 // FLUSH_AT}


def test_uvicorn_workers_serving_asgi_share_one_flusher(
    gunicorn: Start, collector: CollectorProcess
) -> None:
    worker = "uvicorn_worker.UvicornWorker"
    server = gunicorn("conf_hooks.py", "--workers", "2", "-k", worker, app="asgi:app")
    replies = drive(server.url + "/track?src=asgi&seq={seq}", 160, concurrency=8)
    replies += drive(server.url + "/llm?src=asgi-llm&seq={seq}", 40, concurrency=8)
    workers = served_by(replies)
    wait_one_flusher(server, workers, 200)
    # uvicorn re-raises SIGTERM after its graceful shutdown: the workers die by it, so
    # the app closes its client in the lifespan shutdown (no worker_exit, no atexit).
    expected = {"asgi": 160, "asgi-llm": 40}
    stop_and_check(server, collector, expected, workers, exit_marker=LIFESPAN_MARKER)
    assert batches_per_kind(collector) == {"event": 160 // FLUSH_AT, "llm_event": 40 // FLUSH_AT}


def test_recycled_workers_share_one_flusher(gunicorn: Start, collector: CollectorProcess) -> None:
    """``max_requests``: every worker generation sends to the same flusher, never restarted
    (the master's client, made by ``on_starting``, stays connected between generations)."""
    recycle = ["--max-requests", "20", "--max-requests-jitter", "0"]
    server = gunicorn("conf_hooks.py", "--workers", "2", *recycle)
    workers = served_by(drive(server.url + "/track?src=recycled&seq={seq}", 160, concurrency=4))
    assert len(workers) >= 160 // 20, f"workers were not recycled: {workers}"
    assert wait_one_flusher(server, workers, 160)["flusher_restarts"] == 0
    stop_and_check(server, collector, {"recycled": 160}, workers)
    assert_full_batches_but_one_per_exit(collector, len(workers))


def test_without_the_hooks_every_worker_still_shares_one_flusher(
    gunicorn: Start, collector: CollectorProcess
) -> None:
    """No preload, no hooks: each worker makes its own client, and joins the one flusher.

    The master makes no client, so nothing is connected when both workers recycle at
    once: the default linger keeps the flusher until the next generation connects.
    """
    recycle = ["--max-requests", "25", "--max-requests-jitter", "0"]
    server = gunicorn("conf_plain.py", "--workers", "2", *recycle, linger=DEFAULT_LINGER)
    workers = served_by(drive(server.url + "/track?src=own&seq={seq}", 150, concurrency=4))
    assert len(workers) >= 150 // 25, f"workers were not recycled: {workers}"
    assert wait_one_flusher(server, workers, 150)["flusher_restarts"] == 0
    answers = stats_from_workers(server, 2)  # the workers running now: the same flusher
    assert len(server.flusher_pids) == 1, answers
    stop_and_check(server, collector, {"own": 150}, workers)
    assert_full_batches_but_one_per_exit(collector, len(workers))


def test_worker_killed_by_timeout_loses_nothing(
    gunicorn: Start, collector: CollectorProcess
) -> None:
    """A request sleeps past ``timeout``: gunicorn aborts that worker mid-traffic."""
    server = gunicorn("conf_hooks.py", "--workers", "2", "--timeout", "2")
    workers = served_by(drive(server.url + "/track?src=before&seq={seq}", 40))
    sleeper: list[tuple[int, str]] = []
    thread = threading.Thread(
        target=lambda: sleeper.append(get(server.url + "/sleep?src=sleeper&seq=0&s=120"))
    )
    thread.start()
    stuck = int(server.host.wait_for(r"SLEEPING pid=(\d+)", deadline_s=DEADLINE_S)[0].group(1))
    during = 0

    def traffic_until_the_timeout() -> bool:
        """Traffic goes on, served by the other worker, until gunicorn aborts the stuck one."""
        nonlocal during, workers
        if server.host.matches(rf"WORKER TIMEOUT \(pid:{stuck}\)"):
            return True
        workers |= served_by(drive(server.url + "/track?src=during&seq={seq}", 10, start=during))
        during += 10
        return False

    # Paced: a few hundred events over gunicorn's 2-4 s, not thousands.
    poll_until(traffic_until_the_timeout, DEADLINE_S, "gunicorn's WORKER TIMEOUT", interval=0.1)
    thread.join(DEADLINE_S)
    assert sleeper and sleeper[0][0] != 200, sleeper
    server.host.wait_for(rf"TRUBRICS-TEST-EXIT pid={stuck}\b", deadline_s=DEADLINE_S)
    workers |= served_by(drive(server.url + "/track?src=after&seq={seq}", 40))
    wait_one_flusher(server, workers, 80 + during + 1)
    expected = {"before": 40, "during": during, "after": 40, "sleeper": 1}
    stop_and_check(server, collector, expected, workers | {stuck}, allow=(ABORT_TRACEBACK,))


def test_sighup_reload_keeps_the_flusher(gunicorn: Start, collector: CollectorProcess) -> None:
    """SIGHUP: new workers, old ones leave gracefully, the one flusher stays."""
    server = gunicorn("conf_hooks.py", "--workers", "2")
    old = served_by(drive(server.url + "/track?src=before-hup&seq={seq}", 100, concurrency=4))
    flusher = wait_one_flusher(server, old, 100)["flusher_pid"]
    booted = len(server.host.matches(r"Booting worker with pid"))
    server.host.send_signal(signal.SIGHUP)
    server.host.wait_for(r"Booting worker with pid", booted + 2, DEADLINE_S)
    for pid in old:
        server.host.wait_for(rf"TRUBRICS-TEST-EXIT pid={pid}\b", deadline_s=DEADLINE_S)
    new = served_by(drive(server.url + "/track?src=after-hup&seq={seq}", 100, concurrency=4))
    assert not new & old, "old workers still answered after the reload"
    assert wait_one_flusher(server, old | new, 200)["flusher_pid"] == flusher
    stop_and_check(server, collector, {"before-hup": 100, "after-hup": 100}, old | new)
    assert batches_per_kind(collector) == {"event": 200 // FLUSH_AT}


def test_flusher_killed_under_gunicorn_is_replaced(
    gunicorn: Start, collector: CollectorProcess
) -> None:
    """The flusher SIGKILLed between two waves: a worker's next ``track()`` starts another.

    The flusher is no child of gunicorn: the dead one is reaped by the reaper above
    the host (init in production, this process here), never left a zombie under the
    master. Events the killed flusher held in memory would be lost, so the first wave
    is waited for before the kill.
    """
    server = gunicorn("conf_hooks.py", "--workers", "2", "--preload")
    workers = served_by(drive(server.url + "/track?src=first&seq={seq}", 100))
    collector.wait_for_events(100, timeout=DEADLINE_S)  # 5 full batches, sent at once
    first = server.stats()["stats"]["flusher_pid"]
    assert the_flusher(server.host.pid).pid == first
    psutil.Process(first).kill()
    assert wait_reaped(first) == -signal.SIGKILL
    server.flusher_pids.discard(first)
    workers |= served_by(drive(server.url + "/track?src=second&seq={seq}", 100))
    stats = wait_one_flusher(server, workers, 100)
    assert stats["flusher_pid"] != first and stats["flusher_restarts"] >= 1, stats
    stop_and_check(server, collector, {"first": 100, "second": 100}, workers)
