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

On its first POST it prints ``POST latency: S s``, the ``--latency-ms`` setting
the server runs with.

Imported, it provides ``CollectorProcess`` (start/stop that process from a test) and
``ListeningProcess`` (any command that prints a ``listening on http://HOST:PORT`` line),
both ``support.processes.ServerProcess``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

from trubrics_mp._servers import ServerProcess, poll_until
from trubrics_mp.collector import CollectorHandler, Response, error_response, serve

SCRIPT = Path(__file__).resolve()
LISTENING = re.compile(r"listening on (http://[^\s:]+:(\d+))")
DEFAULT_API_KEY = "test-api-key"
HTTP_TIMEOUT_S = 30.0
FAULT_KEYS = {"fail_status", "fail_count", "retry_after", "delay_s", "down"}


# ---- server side (runs inside the subprocess) ------------------------------------
class _FaultState:
    """Failures already injected, per control file content (shared by all threads)."""

    lock = threading.Lock()
    consumed: dict[str, int] = {}
    announced = False


def _injected(control: dict[str, Any], detail: str) -> Response:
    headers = {}
    if control.get("retry_after") is not None:
        headers["Retry-After"] = str(control["retry_after"])
    return error_response(int(control.get("fail_status", 503)), detail, headers)


class FaultInjectingHandler(CollectorHandler):
    """The collector's handler, failing POSTs as the control file says."""

    control_path: Optional[Path] = None

    def before_post(self, path: str) -> Optional[Response]:
        with _FaultState.lock:
            if not _FaultState.announced:  # the setting the server really has, once
                _FaultState.announced = True
                self.collector.log(f"POST latency: {self.collector.latency_s:g} s")
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


class ListeningProcess(ServerProcess):
    """A server subprocess that prints ``listening on http://HOST:PORT`` when ready."""

    def __init__(self, argv: Sequence[str], cwd: Optional[Path] = None) -> None:
        super().__init__(argv, ready=LISTENING.pattern, cwd=cwd)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self.poll() is not None or self.returncode is not None:
            raise RuntimeError(f"{self.name} is not running")
        return self.ready_match.group(1)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


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
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            if self.poll() is not None or self.returncode is not None:
                raise AssertionError(f"collector is not running:\n{self.output_text}")
            found[:] = self.events(**filters)
            return len(found) >= n

        def state() -> str:
            matching = filters or "anything"
            return f"at least {n} event(s) matching {matching}, the collector has {len(found)}"

        poll_until(enough, timeout, state)
        return found


if __name__ == "__main__":
    raise SystemExit(main())
