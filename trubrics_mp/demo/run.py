"""``trubrics-mp demo``: the collector, gunicorn, real load, a stop, and a verdict.

1. ``python -m trubrics_mp collect --db PATH --port 0``; the port comes from
   its ``listening on`` line.
2. ``python -m gunicorn -c python:trubrics_mp.demo.gunicorn_conf`` with
   ``--workers W --bind 127.0.0.1:0`` serving :mod:`trubrics_mp.demo.app`; the
   master creates the client (``preload_app``) and so owns the one flusher.
3. The load generator (:mod:`trubrics_mp.demo.load`) with a progress bar.
4. SIGTERM to the master; the time until the collector holds every event is
   the drain time.
5. The summary (:mod:`trubrics_mp.demo.summary`) from the collector's
   ``/events`` and ``/batches`` and the workers' reports.

Whatever happens (an error, Ctrl-C, SIGTERM), gunicorn (master, workers,
flusher) is stopped before the collector, and the temporary directory removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import IO, Any, Iterator, Optional
from urllib.parse import quote

from .load import LoadGenerator, LoadResult, Progress, run_with_progress
from .services import POLL_S, DemoError, Service, get_json
from .summary import Observed, build, format_text, to_json

LISTENING = r"listening on (http://[^\s:]+:\d+)"
GUNICORN_LISTENING = r"Listening at: http://([\d.]+):(\d+)"
WORKER_BOOTED = r"Booting worker with pid: (\d+)"
FLUSHER_LINE = r"trubrics_mp: flusher pid (\d+) serves every worker"
STOP_DEADLINE_S = 60.0  # gunicorn's graceful_timeout (20 s) + the client's shutdown_timeout
EVENTS_PER_REQUEST = 2


@dataclasses.dataclass
class DemoOptions:
    requests: int = 2000
    concurrency: int = 8
    workers: int = 4
    db: Path = Path("trubrics-demo.sqlite3")
    json_line: bool = False
    summary_json: Optional[Path] = None


def gunicorn_missing() -> Optional[str]:
    """A message saying how to install gunicorn, or None when it is importable."""
    if importlib.util.find_spec("gunicorn") is not None:
        return None
    return (
        "trubrics-mp demo runs a real gunicorn server, but gunicorn is not installed"
        f" for {sys.executable}.\nInstall it with:  {sys.executable} -m pip install gunicorn"
        "\n(or: pip install 'trubrics-mp[demo]')"
    )


def run_demo(options: DemoOptions, out: IO[str]) -> int:
    """Run the whole demo; 0 when every tracked event was stored exactly once."""
    missing = gunicorn_missing()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="trubrics-demo-") as workdir:
        try:
            with _sigterm_interrupts():
                summary = _run(options, Path(workdir), out)
        except KeyboardInterrupt:
            print("\ntrubrics-mp demo: interrupted; everything it started is stopped", file=out)
            return 130
        except DemoError as exc:
            print(f"trubrics-mp demo: {exc}", file=sys.stderr)
            return 1
    print(format_text(summary), file=out)
    if options.summary_json is not None:
        options.summary_json.write_text(to_json(summary) + "\n", encoding="utf-8")
    if options.json_line:
        print(to_json(summary), file=out)
    return 0 if summary["ok"] else 1


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the demo runs (same clean-up)."""

    def interrupt(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _env() -> dict[str, str]:
    """The children's environment: this package importable whatever the directory."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


@dataclasses.dataclass(frozen=True)
class _Run:
    """One run's identity and where its files live."""

    run_id: str
    db: Path
    workdir: Path
    workers: int


@dataclasses.dataclass(frozen=True)
class _Baseline:
    """The collector before the run: what it already held (the file is kept across runs)."""

    url: str
    since: str
    events: int
    batch_id: int


def _run(options: DemoOptions, workdir: Path, out: IO[str]) -> dict[str, Any]:
    run = _Run(uuid.uuid4().hex[:12], options.db.resolve(), workdir, options.workers)
    say = _printer(out)
    say(
        f"trubrics-mp demo: {options.requests} chat requests at concurrency"
        f" {options.concurrency}, gunicorn with {options.workers} workers, a local collector"
    )
    with contextlib.ExitStack() as stack:
        collector = _start_collector(stack, run)
        base = _baseline(collector, run, say)
        server = _start_gunicorn(stack, base.url, run)
        flusher_pid = _wait_ready(server, options.workers, say)
        say(f"  sending {options.requests} requests (POST /chat; each tracks 2 events)")
        load = _drive(server, options, out)
        say("  stopping gunicorn: SIGTERM to the master")
        observed = _stop_and_observe(server, base, load, run, flusher_pid)
    say("")
    return build(load, observed, options.concurrency)


def _baseline(collector: Service, run: _Run, say: Any) -> _Baseline:
    url = collector.wait_for(LISTENING)[0].group(1)
    say(f"  collector  {url} (pid {collector.pid}), SQLite file {run.db}")
    since = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    events = int(get_json(url + "/health")["events"])
    batch_id = max((int(b["id"]) for b in get_json(url + "/batches")), default=0)
    return _Baseline(url, since, events, batch_id)


def _stop_and_observe(
    server: Service, base: _Baseline, load: LoadResult, run: _Run, flusher_pid: Optional[int]
) -> Observed:
    """Stop gunicorn, measuring the drain; then read what the collector stored."""
    expected = base.events + EVENTS_PER_REQUEST * load.ok
    drain_s, stop_s = _stop_and_drain(server, base.url, expected)
    status, clean = server.poll(), server.reap_group(STOP_DEADLINE_S)
    stored = get_json(f"{base.url}/events?since={quote(base.since, safe='')}")
    batches = get_json(base.url + "/batches")
    return Observed(
        run_id=run.run_id,
        workers=run.workers,
        events=[event for event in stored if _ours(event, run.run_id)],
        posts=sum(1 for batch in batches if batch["id"] > base.batch_id),
        reports=_reports(run.workdir),
        drain_s=drain_s,
        stop_s=stop_s,
        gunicorn_status=status,
        flusher_pid=flusher_pid,
        leftovers_killed=not clean,
        db=run.db,
    )


def _printer(out: IO[str]) -> Any:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    return say


def _start_collector(stack: contextlib.ExitStack, run: _Run) -> Service:
    argv = [sys.executable, "-m", "trubrics_mp", "collect", "--db", str(run.db), "--port", "0"]
    service = Service("the collector", argv, run.workdir / "collector.log", _env())
    stack.callback(service.stop, STOP_DEADLINE_S)
    return service.start()


def _start_gunicorn(stack: contextlib.ExitStack, url: str, run: _Run) -> Service:
    factory = f"trubrics_mp.demo.app:create_app({url!r}, {str(run.workdir)!r}, {run.run_id!r})"
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:trubrics_mp.demo.gunicorn_conf"]
    argv += ["--workers", str(run.workers), "--bind", "127.0.0.1:0", factory]
    service = Service("gunicorn", argv, run.workdir / "gunicorn.log", _env())
    stack.callback(service.stop, STOP_DEADLINE_S)
    return service.start()


def _wait_ready(server: Service, workers: int, say: Any) -> Optional[int]:
    """Wait for the listening line and every worker; returns the flusher's pid."""
    host, port = server.wait_for(GUNICORN_LISTENING)[0].groups()
    server.wait_for(WORKER_BOOTED, count=workers)
    flushers = server.matches(FLUSHER_LINE)
    flusher_pid = int(flushers[0].group(1)) if flushers else None
    say(
        f"  gunicorn   http://{host}:{port} (master pid {server.pid}, preload_app,"
        f" {workers} sync workers)"
    )
    say(f"  flusher    pid {flusher_pid}, started by the master, shared by every worker")
    return flusher_pid


def _drive(server: Service, options: DemoOptions, out: IO[str]) -> LoadResult:
    host, port = server.matches(GUNICORN_LISTENING)[0].groups()
    generator = LoadGenerator(host, int(port), options.requests, options.concurrency)
    run_with_progress(generator, Progress(options.requests, out))
    return generator.result()


def _stop_and_drain(
    server: Service, url: str, expected_events: int
) -> tuple[Optional[float], Optional[float]]:
    """SIGTERM the master; seconds until the collector holds ``expected_events``
    and until the master exits (None: not within the deadline, then killed)."""
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    drained: Optional[float] = None
    exited: Optional[float] = None
    while time.monotonic() - started < STOP_DEADLINE_S:
        if drained is None and get_json(url + "/health")["events"] >= expected_events:
            drained = time.monotonic() - started
        if exited is None and server.poll() is not None:
            exited = time.monotonic() - started
            continue  # one more look at the collector: the master delivered before exiting
        if exited is not None:
            break
        time.sleep(POLL_S)
    if exited is None:
        server.kill_group()
    return drained, exited


def _ours(event: dict[str, Any], run_id: str) -> bool:
    properties = event.get("properties")
    return isinstance(properties, dict) and properties.get("demo_run") == run_id


def _reports(workdir: Path) -> list[dict[str, Any]]:
    reports = []
    for path in sorted(workdir.glob("worker-*.json")):
        reports.append(json.loads(path.read_text(encoding="utf-8")))
    return reports
