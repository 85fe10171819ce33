"""Test helper: the real collector in a subprocess, with fault injection.

As a script (``python tests/support/collector.py --db PATH --port 0 --control PATH``)
it runs ``trubrics_mp.collector.serve`` with ``FaultInjectingHandler``, whose
``before_post`` reads the JSON control file (if present) on every POST::

    {"fail_status": 503, "fail_count": 3, "retry_after": "1", "delay_s": 0.0,
     "down": false, "nonce": "..."}

- ``fail_count``: the next N POSTs get ``fail_status`` (default 503), then POSTs are
  accepted. Consumption is counted per distinct file content, under a lock, so it is
  thread-safe and a rewrite of the file (``set_faults`` adds a fresh ``nonce``) starts
  a new count. The file itself is never written by the server.
- ``down``: every POST gets ``fail_status`` (default 503) until the file changes.
- ``retry_after``: sent as a ``Retry-After`` header with injected failures.
- ``delay_s``: sleep before answering every POST (failures included).

Imported, it provides ``CollectorProcess`` (start/stop that process from a test) and
``ListeningProcess`` (any command that prints a ``listening on http://HOST:PORT`` line).
"""

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

import psutil

from trubrics_mp.collector import CollectorHandler, Response, error_response, serve

SCRIPT = Path(__file__).resolve()
LISTENING = re.compile(r"listening on (http://[^\s:]+:(\d+))")
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 20.0
DEFAULT_API_KEY = "test-api-key"
HTTP_TIMEOUT_S = 30.0
FAULT_KEYS = {"fail_status", "fail_count", "retry_after", "delay_s", "down"}


# ---- server side (runs inside the subprocess) ------------------------------------
class _FaultState:
    """Failures already injected, per control file content (shared by all threads)."""

    lock = threading.Lock()
    consumed: dict[str, int] = {}


def _injected(control: dict[str, Any], detail: str) -> Response:
    headers = {}
    if control.get("retry_after") is not None:
        headers["Retry-After"] = str(control["retry_after"])
    return error_response(int(control.get("fail_status", 503)), detail, headers)


class FaultInjectingHandler(CollectorHandler):
    """The collector's handler, failing POSTs as the control file says."""

    control_path: Optional[Path] = None

    def before_post(self, path: str) -> Optional[Response]:
        raw = self._read_control()
        if raw is None:
            return None
        control = json.loads(raw)
        if control.get("delay_s"):
            time.sleep(float(control["delay_s"]))
        if control.get("down"):
            return _injected(control, "collector is down (fault injection)")
        with _FaultState.lock:
            used = _FaultState.consumed.get(raw, 0)
            if used >= int(control.get("fail_count", 0)):
                return None
            _FaultState.consumed[raw] = used + 1
        return _injected(control, f"injected failure {used + 1} of {control['fail_count']}")

    def _read_control(self) -> Optional[str]:
        if self.control_path is None:
            return None
        try:
            return self.control_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the fault-injecting collector until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control", required=True, help="JSON control file (may be absent)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    FaultInjectingHandler.control_path = Path(args.control)
    return serve(
        args.db,
        args.host,
        args.port,
        latency_s=args.latency_ms / 1000,
        handler_class=FaultInjectingHandler,
    )


# ---- test side --------------------------------------------------------------------
P = TypeVar("P", bound="ListeningProcess")
HttpResult = tuple[int, dict[str, str], Any]
"""Status, response headers (lower-case names), decoded JSON body (None if empty)."""


def http_request(
    url: str, body: Any = None, headers: Optional[dict[str, str]] = None, method: str = "GET"
) -> HttpResult:
    """One HTTP request with urllib; error statuses are returned, not raised."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            status, raw, found = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, found = error.code, error.read(), error.headers
    payload = json.loads(raw) if raw else None
    return status, {k.lower(): v for k, v in found.items()}, payload


def post_events(
    base_url: str, events: Any, path: str = "/publish_events", api_key: str = DEFAULT_API_KEY
) -> HttpResult:
    """POST a batch the way the official SDK does."""
    headers = {"Content-Type": "application/json", "x-api-key": api_key}
    return http_request(base_url + path, events, headers, method="POST")


def child_processes() -> list[psutil.Process]:
    """Live (non-zombie) descendants of this process."""
    children = psutil.Process().children(recursive=True)
    return [c for c in children if _is_alive(c)]


def _is_alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class ListeningProcess:
    """A server subprocess that prints ``listening on http://HOST:PORT`` when ready.

    stdout and stderr are merged and drained by a thread (so the server never blocks
    on a full pipe); every line is kept in ``output``.
    """

    def __init__(self, argv: Sequence[str], cwd: Optional[Path] = None) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.proc: Optional[subprocess.Popen[str]] = None
        self.output: list[str] = []
        self.returncode: Optional[int] = None
        self._url: Optional[str] = None
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._reader: Optional[threading.Thread] = None

    def start(self: P) -> P:
        """Spawn the process and wait (up to a minute) for its listening line."""
        if self.proc is not None:
            raise RuntimeError("already started")
        self.output, self._url, self._lines = [], None, queue.Queue()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        try:
            self._url = self._wait_for_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def _wait_for_listening(self) -> str:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(f"server exited before listening:\n{self.output_text}")
            match = LISTENING.search(line)
            if match:
                return match.group(1)
        raise RuntimeError(f"no listening line within {START_DEADLINE_S}s:\n{self.output_text}")

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        """Signal the process, wait, kill it if overdue; idempotent. Returns its status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.returncode
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            if self._reader is not None:
                self._reader.join(timeout=STOP_DEADLINE_S)
            if proc.stdout is not None:
                proc.stdout.close()
        self.returncode = proc.returncode
        return self.returncode

    @property
    def output_text(self) -> str:
        return "\n".join(self.output)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._url is None or self.proc is None:
            raise RuntimeError("server is not running")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def __enter__(self: P) -> P:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class CollectorProcess(ListeningProcess):
    """The fault-injecting collector of this file, run with the tests' interpreter.

    Files live in ``tmp_path``: ``<name>.sqlite3`` (``db_path``) and
    ``<name>-control.json`` (``control_path``). ``stop()`` then ``start()`` restarts
    on the same database (on a new port). Caveat: a control file left in place
    applies again after a restart, with its ``fail_count`` counted afresh.
    """

    def __init__(self, tmp_path: Path, latency_ms: float = 0, *, name: str = "collector") -> None:
        self.tmp_path = Path(tmp_path)
        self.db_path = self.tmp_path / f"{name}.sqlite3"
        self.control_path = self.tmp_path / f"{name}-control.json"
        argv = [sys.executable, str(SCRIPT), "--db", str(self.db_path), "--port", "0"]
        argv += ["--control", str(self.control_path), "--latency-ms", str(latency_ms)]
        super().__init__(argv, cwd=self.tmp_path)

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored events via ``GET /events`` (filters: user_id, event, since, limit)."""
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
        found: list[dict[str, Any]] = self._get(f"/events?{query}" if query else "/events")
        return found

    def batches(self) -> list[dict[str, Any]]:
        """Stored batches via ``GET /batches``: id, kind, n_events, received_at."""
        found: list[dict[str, Any]] = self._get("/batches")
        return found

    def health(self) -> dict[str, Any]:
        found: dict[str, Any] = self._get("/health")
        return found

    def _get(self, path: str) -> Any:
        status, _, payload = http_request(self.url + path)
        if status != 200:
            raise AssertionError(f"GET {path} answered {status}: {payload}")
        return payload

    def post(
        self, events: Any, path: str = "/publish_events", api_key: str = DEFAULT_API_KEY
    ) -> HttpResult:
        """POST a batch; returns (status, headers, body)."""
        return post_events(self.url, events, path, api_key)

    def set_faults(self, **faults: Any) -> None:
        """Atomically (re)write the control file; a new call always starts afresh."""
        unknown = set(faults) - FAULT_KEYS
        if unknown:
            raise TypeError(f"unknown fault setting(s): {sorted(unknown)}")
        content = json.dumps({**faults, "nonce": uuid.uuid4().hex})
        temporary = self.control_path.with_name(f".{self.control_path.name}.{os.getpid()}")
        temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, self.control_path)

    def clear_faults(self) -> None:
        """Remove the control file: every POST is handled normally again."""
        self.control_path.unlink(missing_ok=True)

    def wait_for_events(
        self, n: int, timeout: float = 60.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Poll ``GET /events`` until at least ``n`` (matching) events are stored."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"collector is not running:\n{self.output_text}")
            found = self.events(**filters)
            if len(found) >= n:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected at least {n} event(s) matching {filters or 'anything'} within"
                    f" {timeout}s, the collector has {len(found)}"
                )
            time.sleep(0.05)

    def __enter__(self) -> "CollectorProcess":
        return self.start()


if __name__ == "__main__":
    raise SystemExit(main())
