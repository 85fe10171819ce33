"""A minimal HTTP sink that every peer posts to, counting events per label.

Run as ``python -m benchmarks.sink --port 0``; it prints
``listening on http://127.0.0.1:PORT`` once ready and serves until SIGTERM.

Every client under test gets a host URL of the form
``http://127.0.0.1:PORT/d<MS>/<label>`` (``d<MS>/`` optional): the sink sleeps
``MS`` milliseconds before answering each POST to it (an artificial API
latency), and counts the events of each body under ``<label>``, whatever path
the peer appends (``/publish_events``, ``/batch/``, ``/v1/batch``...). Bodies
are JSON: a list (the Trubrics API) or an object with a ``batch`` list (PostHog
v0, Segment); gzip bodies are accepted. When an event's properties carry a
``bench_key``, distinct keys are counted too, so duplicates show.

``GET /counts`` answers ``{label: {"events", "requests", "distinct", "bytes",
"first_at", "last_at"}}`` (``*_at``: ``time.monotonic()`` of this machine when
a POST was answered; comparable between processes on Linux).

Caveats: answers 200 to any POST, checks nothing (no API key, no schema);
plain HTTP/1.1 with keep-alive on one thread per connection (ThreadingHTTPServer);
it is a separate process so that it does not compete for the GIL with the
measured process, but it does compete for the machine's cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

_PATH = re.compile(r"^/(?:d(\d+)/)?([A-Za-z0-9_.-]+)(/.*)?$")


class _Tally:
    """Per-label counters, shared by all handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.labels: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, set[str]] = {}

    def add(self, label: str, events: list[Any], size: int) -> None:
        keys = [k for k in map(_bench_key, events) if k is not None]
        now = time.monotonic()
        with self.lock:
            row = self.labels.get(label)
            if row is None:
                row = {"events": 0, "requests": 0, "empty_requests": 0, "bytes": 0}
                row["first_at"] = now
                self.labels[label] = row
                self.keys[label] = set()
            row["events"] += len(events)
            row["requests"] += 1
            row["empty_requests"] += 0 if events else 1
            row["bytes"] += size
            row["last_at"] = now
            self.keys[label].update(keys)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {
                label: {**row, "distinct": len(self.keys[label])}
                for label, row in self.labels.items()
            }


TALLY = _Tally()


def _bench_key(event: Any) -> Optional[str]:
    if not isinstance(event, dict):
        return None
    props = event.get("properties")
    if isinstance(props, dict) and "bench_key" in props:
        return str(props["bench_key"])
    return None


def count_events(body: Any) -> list[Any]:
    """The events of one request body, in any of the peers' formats."""
    if isinstance(body, list):
        return body  # Trubrics: a JSON list of events
    if isinstance(body, dict):
        for key in ("batch", "events"):
            if isinstance(body.get(key), list):
                return list(body[key])  # PostHog v0, Segment; PostHog v1
        return [body]
    return []


class SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    # One send() per response and no Nagle: otherwise the body waits for the
    # client's delayed ACK (about 40 ms per request on a keep-alive connection).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: one line per request would cost more than the request

    def _answer(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/counts"):
            self._answer(200, TALLY.snapshot())
        else:
            self._answer(200, {"status": "ok"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._answer(404, {"detail": "unknown path"})
            return
        delay_ms, label = match.group(1), match.group(2)
        if delay_ms:
            time.sleep(int(delay_ms) / 1000)
        try:
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            events = count_events(json.loads(raw))
        except ValueError as exc:
            self._answer(400, {"detail": f"bad body: {exc}"})
            return
        TALLY.add(label, events, len(raw))
        self._answer(200, {"status": "ok"})


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark HTTP sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = SinkServer((args.host, args.port), SinkHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    port = server.server_address[1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
