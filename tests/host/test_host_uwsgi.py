"""The real uWSGI server, started as a user would, with real HTTP traffic.

The app (``tests/host/apps/uwsgi/uwsgi_app.py``) tracks one event per request,
``{"src": ..., "seq": ...}``; its client is made in ``uwsgi_analytics.py`` and
wired with :func:`trubrics_mp.integrations.uwsgi.register`. Each test stops
uWSGI as production does (the master FIFO's graceful ``q``, or SIGTERM with
``die-on-term``), then checks that every event reached the collector exactly
once, that the stop was graceful (exit code 0, no "NO MERCY" kill of a
worker, no traceback), and that the flusher left by itself once uWSGI was
gone (exit status 0, reaped: no zombie). While uWSGI runs, one flusher serves
it (``flushers()``), outside uWSGI: no child of the master, in a session and
process group of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import psutil
import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.host_flushers import the_flusher, wait_flushers_left, wait_reaped
from support.hosts import assert_no_traceback, drive, get, tracebacks
from support.processes import ServerProcess, poll_until

UWSGI = Path(sys.executable).parent / "uwsgi"
APP_DIR = Path(__file__).resolve().parent / "apps" / "uwsgi"
API_KEY = "uwsgi-host-test-key-5b2e"
DEADLINE_S = 60.0
# uWSGI lines that mean a process was killed after a timeout, not left on its own.
FORCED = re.compile(r"NO MERCY|taking too much time|killed by signal 9|HARAKIRI", re.I)
GOOD = ("--master", "--die-on-term")
LISTENING = r"listening on (http://\S+)"  # printed by the app (uwsgi_app.py), port 0 resolved
DEADLINE_S_WAVES = 10  # waves of traffic until both workers of a master-less server answered
DEFAULT_LINGER = ""  # TRUBRICS_MP_LINGER unset: the client's default linger (5 s)


@dataclass
class Uwsgi:
    """A running uWSGI server and what a test learns about it."""

    host: ServerProcess
    url: str
    fifo: Path
    stop_seconds: Optional[float] = None
    seen: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        status, body = get(f"{self.url}/stats")
        assert status == 200, body
        reply: dict[str, Any] = json.loads(body)
        return reply

    def track(self, src: str, n: int, start: int = 0, pad: int = 0) -> set[int]:
        """``n`` requests from 4 threads; the pids of the workers that answered."""
        url = f"{self.url}/track?src={src}&seq={{seq}}" + (f"&pad={pad}" if pad else "")
        replies = drive(url, n, concurrency=4, start=start)
        failed = [r for r in replies if r.status != 200]
        assert not failed, f"{len(failed)} requests failed, e.g. {failed[:3]}"
        return {json.loads(r.body)["pid"] for r in replies}

    def wait_received(self, total: int) -> dict[str, Any]:
        """Poll ``/stats`` until the flusher has read ``total`` events; the last reply."""
        replies: list[dict[str, Any]] = []

        def received() -> int:
            return sum(replies[-1]["stats"]["received_by_pid"].values()) if replies else 0

        def enough() -> bool:
            replies.append(self.stats())
            return received() >= total

        poll_until(enough, DEADLINE_S, lambda: f"{total} events; last reply: {replies[-1:]}")
        assert received() == total, replies[-1]
        return replies[-1]

    def stop(self, how: str = "fifo-q") -> float:
        """Stop as production does: ``fifo-q`` (graceful) or ``sigterm`` (die-on-term).

        ``wait``: the test already asked; just wait for the exit.
        """
        if how == "fifo-q":
            self.write_fifo(b"q")
        sig = signal.SIGTERM if how == "sigterm" else None  # else: already asked to stop
        self.host.stop(DEADLINE_S, sig=sig)
        assert not self.host.killed, f"no exit {DEADLINE_S} s after {how}:\n{self.host.tail()}"
        self.stop_seconds = self.host.stop_seconds
        assert self.stop_seconds is not None
        return self.stop_seconds

    def write_fifo(self, command: bytes) -> None:
        """A command to the master FIFO (``q``: graceful stop, ``r``: graceful reload)."""
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, command)
        finally:
            os.close(fd)


def _command(fifo: Optional[Path], options: tuple[str, ...]) -> list[str]:
    """The uWSGI command line; without ``fifo``, no master FIFO (which implies a master)."""
    return [
        str(UWSGI),
        "--http-socket",
        "127.0.0.1:0",  # the app prints the port the OS chose
        "--module",
        "uwsgi_app:application",
        "--chdir",
        str(APP_DIR),
        "--virtualenv",
        sys.prefix,
        *(["--master-fifo", str(fifo)] if fifo is not None else []),
        "--disable-logging",
        *options,
    ]


StartUwsgi = Callable[..., Uwsgi]


@pytest.fixture
def start_uwsgi(tmp_path: Path, collector: CollectorProcess) -> Iterator[StartUwsgi]:
    """``start_uwsgi(*options, flush_at=50, flush_interval=60) -> Uwsgi``; always stopped."""
    servers: list[Uwsgi] = []

    def start(
        *options: str,
        flush_at: int = 50,
        flush_interval: float = 60,
        hooks: bool = True,
        linger: Optional[str] = None,
        master_fifo: bool = True,
    ) -> Uwsgi:
        """``linger``: ``TRUBRICS_MP_LINGER`` for uWSGI (default: the test's short one)."""
        fifo = tmp_path / f"master-{len(servers)}.fifo"
        env = {
            "TRUBRICS_API_KEY": API_KEY,
            "TRUBRICS_URL": collector.url,
            "TRUBRICS_FLUSH_AT": str(flush_at),
            "TRUBRICS_FLUSH_INTERVAL": str(flush_interval),
            "TRUBRICS_UWSGI_HOOKS": "1" if hooks else "0",
        }
        if linger is not None:
            env["TRUBRICS_MP_LINGER"] = linger
        argv = _command(fifo if master_fifo else None, options)
        host = ServerProcess(argv, name="uwsgi", ready=LISTENING, env=env)
        servers.append(Uwsgi(host, "", fifo))
        servers[-1].url = host.start().ready_match.group(1)
        return servers[-1]

    yield start
    for server in servers:
        server.host.stop(20.0, sig=signal.SIGINT)  # brutal stop, if a test failed midway


def _flusher_pid(reply: dict[str, Any]) -> int:
    pid = reply["stats"]["flusher_pid"]
    assert isinstance(pid, int), reply
    return pid


def _one_flusher(server: Uwsgi, reply: dict[str, Any]) -> int:
    """The pid of the one flusher, the one ``reply`` names, checked to be outside uWSGI."""
    flusher = the_flusher(server.host.pid)
    assert flusher.pid == _flusher_pid(reply), reply
    return flusher.pid


def _assert_batches_full_but_one_per_exit(
    collector: CollectorProcess, flush_at: int, exits: int
) -> None:
    """Batches of ``flush_at`` events, shared by the workers, except a partial one at most
    per worker exit: a worker's ``close()`` (its exit hook) is a flush, which sends the
    pipeline's open batches at once (nothing else cuts one short with a long interval)."""
    partial = [b["n_events"] for b in collector.batches() if b["n_events"] != flush_at]
    assert len(partial) <= exits, f"{len(partial)} partial batches for {exits} exits: {partial}"


def _assert_graceful(server: Uwsgi, allow_forced: int = 0) -> None:
    """Exit code 0; no traceback; no kill after a timeout (beyond ``allow_forced`` lines)."""
    text = server.host.output_text
    assert server.host.returncode == 0, text[-3000:]
    assert_no_traceback(text)
    forced = [line for line in text.splitlines() if FORCED.search(line)]
    assert len(forced) <= allow_forced, forced
    assert API_KEY not in text


def _assert_no_warning(server: Uwsgi) -> None:
    ours = [line for line in server.host.output_text.splitlines() if "trubrics_mp" in line]
    assert not [line for line in ours if "WARNING" in line or "ERROR" in line], ours


def _report(name: str, server: Uwsgi, sent: int, collector: CollectorProcess) -> None:
    batches = collector.batches()
    print(
        f"RESULT {name}: sent={sent} delivered={sum(b['n_events'] for b in batches)}"
        f" requests={len(batches)} stop_s={server.stop_seconds:.2f}"
    )


# -- the app loaded in the master (the default) ----------------------------------------
@pytest.mark.parametrize(
    "threads, stop",
    [("enable-threads", "fifo-q"), ("default", "fifo-q"), ("default", "sigterm")],
)
def test_preloaded_app_shares_one_flusher(
    start_uwsgi: StartUwsgi, collector: CollectorProcess, threads: str, stop: str
) -> None:
    """One flusher, started by the master's client but outside uWSGI, fills batches for
    every worker."""
    options: tuple[str, ...] = (*GOOD, "--processes", "2")
    if threads == "enable-threads":
        options += ("--enable-threads",)
    server = start_uwsgi(*options, flush_at=50, flush_interval=60)
    workers = server.track("preload", 200)
    reply = server.wait_received(200)
    flusher = _one_flusher(server, reply)
    cmdline = psutil.Process(flusher).cmdline()
    assert os.path.basename(cmdline[0]).startswith("python"), cmdline  # not the uwsgi binary
    assert cmdline[-2:] == ["trubrics-mp-flusher", "default"], cmdline  # tag, pipeline
    assert {int(pid) for pid in reply["stats"]["received_by_pid"]} == workers
    assert len(workers) == 2  # both workers served requests, through one flusher
    server.stop(stop)
    wait_exactly_once(collector, {"preload": 200})
    assert len(collector.batches()) == 200 // 50  # batches shared across workers
    _assert_graceful(server)
    _assert_no_warning(server)
    wait_flushers_left({flusher})
    _report(f"preload {threads} {stop} has_threads={reply['has_threads']}", server, 200, collector)


def test_a_reload_keeps_the_pipeline_and_leaves_no_idle_flusher(
    start_uwsgi: StartUwsgi, collector: CollectorProcess
) -> None:
    """A graceful reload execs the master under the same pid, twice: the reloaded master's
    client finds the same flusher, still lingering, and no second flusher ever runs.

    The default linger (5 s) is what bridges the moment of the exec, when no process
    of uWSGI is connected.
    """
    server = start_uwsgi(*GOOD, "--processes", "2", flush_at=50, linger=DEFAULT_LINGER)
    workers = server.track("before", 100)
    first = server.wait_received(100)
    flusher = _one_flusher(server, first)
    expected, total = {"before": 100}, 100
    for reload in (1, 2):
        server.write_fifo(b"r")  # graceful reload
        server.url = server.host.wait_for(LISTENING, 1 + reload, DEADLINE_S)[reload].group(1)
        src = f"after-reload-{reload}"
        new = server.track(src, 100)
        assert not new & workers, f"workers of before the reload answered: {new & workers}"
        workers |= new
        expected[src], total = 100, total + 100
        reply = server.wait_received(total)
        assert _one_flusher(server, reply) == flusher  # the same, and the only one
        assert reply["stats"]["flusher_restarts"] == 0
    assert {int(pid) for pid in reply["stats"]["received_by_pid"]} == workers
    server.stop("fifo-q")
    wait_exactly_once(collector, expected)
    assert len(collector.batches()) == total // 50  # every generation fed the same batches
    _assert_graceful(server)
    _assert_no_warning(server)
    wait_flushers_left({flusher})
    _report("two graceful reloads, one flusher", server, total, collector)


def test_recycled_workers_keep_the_one_flusher(
    start_uwsgi: StartUwsgi, collector: CollectorProcess
) -> None:
    """``max-requests`` replaces workers: new ones reach the same flusher, none restarts it."""
    server = start_uwsgi(
        *GOOD,
        "--processes",
        "2",
        "--max-requests",
        "30",
        "--min-worker-lifetime",
        "0",
        flush_at=40,
    )
    pids = server.track("recycled", 160)
    reply = server.wait_received(160)
    assert len(pids) > 2  # workers were replaced
    assert server.host.matches(r"The work of process \d+ is done")
    assert reply["stats"]["flusher_restarts"] == 0
    assert {int(pid) for pid in reply["stats"]["received_by_pid"]} == pids
    flusher = _one_flusher(server, reply)
    server.stop()
    wait_exactly_once(collector, {"recycled": 160})
    _assert_batches_full_but_one_per_exit(collector, 40, len(pids))
    _assert_graceful(server)
    _assert_no_warning(server)
    wait_flushers_left({flusher})
    _report(f"max-requests 30 ({len(pids)} worker pids)", server, 160, collector)


# -- lazy-apps -------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["per-worker", "shared-import"])
def test_lazy_apps_share_one_flusher(
    start_uwsgi: StartUwsgi, collector: CollectorProcess, where: str
) -> None:
    """Each worker loads the app and makes its own client (``per-worker``), or the master
    imports the client (``shared-import``): either way every worker joins one flusher."""
    options: tuple[str, ...] = (*GOOD, "--processes", "2", "--lazy-apps")
    if where == "shared-import":
        options += ("--shared-import", "uwsgi_analytics")
    server = start_uwsgi(*options, flush_at=25)
    server.host.wait_for(LISTENING, 2, DEADLINE_S)  # each worker loaded it
    workers = server.track("lazy", 100)
    server.wait_received(100)
    replies: dict[int, dict[str, Any]] = {}

    def each_answered() -> bool:  # ask until each worker has answered once
        reply = server.stats()
        replies[reply["pid"]] = reply
        return set(replies) >= workers

    poll_until(each_answered, DEADLINE_S, lambda: f"workers {workers}; answered: {set(replies)}")
    assert len(workers) == 2 and set(replies) == workers
    assert len({_flusher_pid(reply) for reply in replies.values()}) == 1, replies
    flusher = _one_flusher(server, replies[min(workers)])
    server.stop()
    wait_exactly_once(collector, {"lazy": 100})
    assert len(collector.batches()) == 100 // 25  # batches shared across workers
    _assert_graceful(server)
    _assert_no_warning(server)
    wait_flushers_left({flusher})
    _report(f"lazy-apps {where} (one flusher)", server, 100, collector)


# -- harakiri ----------------------------------------------------------------------------
def test_harakiri_kills_one_worker_and_loses_nothing(
    start_uwsgi: StartUwsgi, collector: CollectorProcess
) -> None:
    """A request past ``harakiri`` gets its worker SIGKILLed; its event was already queued."""
    server = start_uwsgi(*GOOD, "--processes", "2", "--harakiri", "2", flush_at=20)
    server.track("before", 40)
    sleeper = threading.Thread(target=get, args=(f"{server.url}/sleep?src=sleeper&seq=0&s=60",))
    sleeper.start()
    server.host.wait_for(r"HARAKIRI ON WORKER", deadline_s=DEADLINE_S)
    server.host.wait_for(r"Respawned uWSGI worker", deadline_s=DEADLINE_S)
    sleeper.join(DEADLINE_S)
    server.track("after", 40)
    reply = server.wait_received(81)
    assert reply["stats"]["flusher_restarts"] == 0
    flusher = _one_flusher(server, reply)
    server.stop()
    wait_exactly_once(collector, {"before": 40, "sleeper": 1, "after": 40})
    stop_text = server.host.output_text.split("graceful shutdown triggered")[-1]
    assert not FORCED.search(stop_text), stop_text  # the stop itself killed nothing
    assert server.host.returncode == 0
    assert_no_traceback(server.host.output_text)
    wait_flushers_left({flusher})
    _report("harakiri 2 (one worker SIGKILLed)", server, 81, collector)


# -- the atexit hook ---------------------------------------------------------------------
@pytest.mark.parametrize("hooks", [True, False], ids=["hooks", "no-hooks"])
def test_atexit_hook_hands_over_a_workers_buffer(
    start_uwsgi: StartUwsgi, collector: CollectorProcess, hooks: bool
) -> None:
    """``skip-atexit-teardown`` skips Python's atexit; the chained ``uwsgi.atexit`` still runs.

    The flusher is stopped (SIGSTOP) so the worker's events pile up in its own
    buffer; the graceful stop then runs the worker's exit hooks. Without
    :func:`register` (``no-hooks``) those buffered events are lost: the
    control that shows the hook is what delivers them.
    """
    server = start_uwsgi(*GOOD, "--processes", "1", "--skip-atexit-teardown", hooks=hooks)
    flusher = psutil.Process(_one_flusher(server, server.stats()))
    flusher.suspend()
    try:
        server.track("buffered", 300, pad=40_000)  # ~12 MB: more than the socket holds
        status, body = get(f"{server.url}/local")
        buffered = json.loads(body)["buffered"]
        assert status == 200 and buffered > 0  # the shared queue was full
        server.write_fifo(b"q")
        server.host.wait_for(r"graceful shutdown triggered", deadline_s=DEADLINE_S)
        if not hooks:  # the worker left without handing over
            poll_until(lambda: server.host.poll() is not None, DEADLINE_S, "uWSGI to exit")
    finally:
        flusher.resume()
    server.stop("wait")
    if hooks:
        wait_exactly_once(collector, {"buffered": 300})
    wait_flushers_left({flusher.pid})  # it delivered all it had before it left
    if not hooks:
        stored = len(collector.events())
        assert stored == 300 - buffered, (stored, buffered)
    _assert_graceful(server)
    _report(
        f"skip-atexit-teardown, stalled flusher, {buffered} buffered, {hooks=}",
        server,
        300,
        collector,
    )


# -- without a master --------------------------------------------------------------------
def test_without_a_master_the_workers_still_share_one_flusher(
    start_uwsgi: StartUwsgi, collector: CollectorProcess
) -> None:
    """No master: the first process loads the app and forks the other worker. When it
    leaves (SIGINT), the other worker's events still reach the same flusher, which
    belongs to neither; ``register()`` loads (``uwsgidecorators`` refuses to without a
    master) and warns about nothing."""
    server = start_uwsgi("--processes", "2", "--die-on-term", master_fifo=False, flush_at=25)
    first = server.host.pid  # worker 1, which forked worker 2
    workers: set[int] = set()
    for wave in range(DEADLINE_S_WAVES):
        workers |= server.track("both", 50, start=50 * wave)
        if len(workers) == 2:
            break
    assert len(workers) == 2 and first in workers, workers
    sent = 50 * (wave + 1)
    flusher = _one_flusher(server, server.wait_received(sent))
    server.host.send_signal(signal.SIGINT)  # the first worker leaves; the other stays
    poll_until(lambda: server.host.poll() is not None, DEADLINE_S, "the first worker to exit")
    (second,) = workers - {first}
    assert server.track("second", 50) == {second}
    reply = server.wait_received(sent + 50)
    assert _flusher_pid(reply) == flusher and reply["stats"]["flusher_restarts"] == 0
    assert the_flusher(second).pid == flusher
    os.kill(second, signal.SIGINT)
    # An orphan once the first worker left, so this process reaps it; it exits by itself
    # (uWSGI's own status), not by the signal.
    assert wait_reaped(second) >= 0
    wait_exactly_once(collector, {"both": sent, "second": 50})
    wait_flushers_left({flusher})
    assert_no_traceback(server.host.output_text)
    _assert_no_warning(server)


# -- option checks -----------------------------------------------------------------------
def test_a_lossy_setting_is_warned_about_once(
    start_uwsgi: StartUwsgi, collector: CollectorProcess
) -> None:
    """No ``die-on-term`` on uWSGI 2.0, and ``skip-atexit``: one warning each, by the master."""
    server = start_uwsgi("--master", "--processes", "2", "--skip-atexit")
    server.track("warned", 10)
    flusher = _one_flusher(server, server.wait_received(10))
    server.stop()
    wait_exactly_once(collector, {"warned": 10})
    text = server.host.output_text
    assert len(re.findall(r"WARNING trubrics .*Set die-on-term = true", text)) == 1, text
    assert len(re.findall(r"WARNING trubrics .*Remove skip-atexit", text)) == 1, text
    assert not tracebacks(text)
    wait_flushers_left({flusher})
