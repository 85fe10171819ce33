"""A minimal HTTP sink that every peer posts to, counting events per label.

Run as ``python -m benchmarks.sink --port 0``; it prints
``listening on http://127.0.0.1:PORT`` once ready and serves until SIGTERM.

Every client under test gets a host URL of the form
``http://127.0.0.1:PORT/d<MS>/<label>`` (``d<MS>/`` optional): the sink waits
``MS`` milliseconds before answering each POST to it (an artificial API
latency), and counts the events of each body under ``<label>``, whatever path
the peer appends (``/publish_events``, ``/batch/``, ``/v1/batch``...). Bodies
are JSON: a list (the Trubrics API) or an object with a ``batch`` list (PostHog
v0, Segment); gzip bodies are accepted. When an event's properties carry a
``bench_key``, distinct keys are counted too, so duplicates show.

``GET /counts`` answers ``{label: {"events", "requests", "distinct", "bytes",
"first_at", "last_at"}}`` (``*_at``: ``time.monotonic()`` of this machine when
a POST was answered; comparable between processes on Linux).

The sink stands in for an API on another machine, yet it runs on the cores
the measured processes use, so it is kept cheap: one thread and a
``selectors`` loop (a delayed answer is a timer, not a sleeping thread), a
request parser that reads only the request line and the headers it needs,
and orjson for the bodies when it is installed (the stdlib's json for what
orjson refuses). About half to two thirds of the CPU of the
``ThreadingHTTPServer`` it replaced, per 100-event request (see
``docs/benchmarks.md``).

Caveats: answers 200 to any well-formed POST and checks nothing (no API key,
no schema); HTTP/1.1 with keep-alive and ``Expect: 100-continue``, bodies
framed by ``Content-Length`` only (a chunked request gets a 411 and the
connection is closed). A bad body is a 400; an error in the sink costs that
connection, never the sink. A delayed request is counted when its timer
fires, even if its client left meanwhile (as the threaded sink counted it
after its sleep).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import heapq
import itertools
import json
import re
import selectors
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable, Optional

try:
    import orjson

    _fast_loads: Optional[Callable[[bytes], Any]] = orjson.loads
except ImportError:  # pragma: no cover - the bench installs the fast extra
    _fast_loads = None

_PATH = re.compile(r"^/(?:d(\d+)/)?([A-Za-z0-9_.-]+)(/.*)?$")
_BENCH_KEY = re.compile(rb'"bench_key"\s*:\s*"([^"\\]*)"')  # a plain string key
_HEAD_END = b"\r\n\r\n"
_HEAD_MAX_BYTES = 64 * 1024
_RECV_BYTES = 256 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}


class Tally:
    """Per-label counters."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, set[bytes]] = {}

    def add(self, label: str, events: list[Any], raw: bytes) -> None:
        now = time.monotonic()
        row = self.labels.get(label)
        if row is None:
            row = {"events": 0, "requests": 0, "empty_requests": 0, "bytes": 0, "first_at": now}
            self.labels[label] = row
            self.keys[label] = set()
        row["events"] += len(events)
        row["requests"] += 1
        row["empty_requests"] += 0 if events else 1
        row["bytes"] += len(raw)
        row["last_at"] = now
        if events:
            self.keys[label].update(bench_keys(events, raw))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            label: {**row, "distinct": len(self.keys[label])} for label, row in self.labels.items()
        }


def bench_keys(events: list[Any], raw: bytes) -> list[bytes]:
    """The ``bench_key`` of each event that has one, as UTF-8.

    The fast way is one regular expression over the body; it is taken only when
    it found every ``"bench_key"`` of the body as a plain string. Otherwise (a
    key with an escape, a number, a key elsewhere) each event's
    ``properties["bench_key"]`` is read, as ``str()`` of it.
    """
    named = raw.count(b'"bench_key"')
    if not named:
        return []
    found = _BENCH_KEY.findall(raw)
    if len(found) == named == len(events):
        return found
    return [str(event["properties"]["bench_key"]).encode() for event in events if _keyed(event)]


def _keyed(event: Any) -> bool:
    props = event.get("properties") if isinstance(event, dict) else None
    return isinstance(props, dict) and "bench_key" in props


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


def loads(raw: bytes) -> Any:
    """JSON of a body: orjson when installed, the stdlib for what it refuses (NaN...)."""
    if _fast_loads is not None:
        try:
            return _fast_loads(raw)
        except ValueError:
            pass
    return json.loads(raw)


class Request:
    """One parsed request head: method, path, the few headers the sink reads."""

    __slots__ = ("method", "path", "length", "gzip", "chunked", "expects_continue", "close")

    def __init__(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        words = lines[0].split(b" ")
        if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
            raise ValueError(f"bad request line {lines[0][:80]!r}")
        self.method = words[0].decode("latin-1")
        self.path = words[1].decode("latin-1").split("?", 1)[0]
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        self.length = int(fields.get(b"content-length", b"0"))
        self.gzip = fields.get(b"content-encoding") == b"gzip"
        self.chunked = b"transfer-encoding" in fields
        self.expects_continue = fields.get(b"expect") == b"100-continue"
        closing = fields.get(b"connection") == b"close" or words[2] == b"HTTP/1.0"
        self.close = closing or self.chunked


def answer(status: int, payload: Any, close: bool = False) -> bytes:
    """A whole response: status line, headers and a JSON body."""
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Conn:
    __slots__ = ("sock", "inbox", "outbox", "waiting", "closing", "continued")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.waiting = False  # a delayed answer is due: read no further request yet
        self.closing = False  # close once the outbox is sent
        self.continued = False  # "100 Continue" sent for the request being read


class Sink:
    """The selectors loop: accept, read requests, answer (now or at a timer)."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.tally = Tally()
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, _Conn, str, list[Any], bytes, bool]] = []
        self._order = itertools.count()
        self.running = True
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, None)

    def serve(self) -> None:
        while self.running:
            timeout = max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else 0.2
            for key, mask in self.selector.select(timeout):
                if key.data is None:
                    self._accept()
                    continue
                try:
                    if mask & selectors.EVENT_READ:
                        self._read(key.data)
                    if mask & selectors.EVENT_WRITE and key.data.sock.fileno() >= 0:
                        self._write(key.data)
                except Exception:  # a bug here costs one connection, never the sink
                    traceback.print_exc()
                    self._drop(key.data)
            self._fire_timers()

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.selector.register(sock, selectors.EVENT_READ, _Conn(sock))

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # every whole request before the end was answered, or is due
            if conn.waiting:
                self.selector.unregister(conn.sock)  # its timer answers, then closes
                conn.closing = True
            else:
                self._drop(conn)
            return
        conn.inbox += data
        self._handle_requests(conn)

    def _handle_requests(self, conn: _Conn) -> None:
        """Answer every whole request in the inbox, in order, until one must wait."""
        while not conn.waiting and not conn.closing:
            end = conn.inbox.find(_HEAD_END)
            if end < 0:
                if len(conn.inbox) > _HEAD_MAX_BYTES:
                    self._reply(conn, 400, {"detail": "head too long"}, True)
                return
            try:
                request = Request(bytes(conn.inbox[:end]))
            except ValueError as exc:
                self._reply(conn, 400, {"detail": str(exc)}, True)
                return
            if request.chunked:
                self._reply(conn, 411, {"detail": "chunked bodies unsupported"}, True)
                return
            start = end + len(_HEAD_END)
            if len(conn.inbox) < start + request.length:
                if request.expects_continue and not conn.continued:
                    conn.continued = True
                    conn.outbox += b"HTTP/1.1 100 Continue\r\n\r\n"
                    self._write(conn)
                return  # the body is still coming
            body = bytes(conn.inbox[start : start + request.length])
            del conn.inbox[: start + request.length]
            conn.continued = False
            self._respond(conn, request, body)

    def _respond(self, conn: _Conn, request: Request, body: bytes) -> None:
        if request.method == "GET":
            counts = request.path.startswith("/counts")
            payload: Any = self.tally.snapshot() if counts else {"status": "ok"}
            self._reply(conn, 200, payload, request.close)
            return
        match = _PATH.match(request.path)
        if match is None:
            self._reply(conn, 404, {"detail": "unknown path"}, request.close)
            return
        try:
            raw = gzip.decompress(body) if request.gzip else body
            events = count_events(loads(raw))
        except Exception as exc:  # zlib.error, RecursionError...: this request's 400 only
            self._reply(conn, 400, {"detail": f"bad body: {exc!r}"}, request.close)
            return
        delay_ms = int(match.group(1) or 0)
        if delay_ms:
            conn.waiting = True
            due = time.monotonic() + delay_ms / 1000
            item = (due, next(self._order), conn, match.group(2), events, raw, request.close)
            heapq.heappush(self.timers, item)
            return
        self.tally.add(match.group(2), events, raw)
        self._reply(conn, 200, {"status": "ok"}, request.close)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, conn, label, events, raw, close = heapq.heappop(self.timers)
            self.tally.add(label, events, raw)  # received: counted, as the old sink did
            conn.waiting = False
            if conn.sock.fileno() < 0:
                continue  # the client went away meanwhile
            if conn.closing:  # it half-closed: answer once, then close
                with contextlib.suppress(OSError):
                    conn.sock.send(answer(200, {"status": "ok"}, True))
                conn.sock.close()
                continue
            self._reply(conn, 200, {"status": "ok"}, close)
            self._handle_requests(conn)

    def _reply(self, conn: _Conn, status: int, payload: Any, close: bool) -> None:
        conn.outbox += answer(status, payload, close)
        conn.closing = close
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbox) if conn.outbox else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn)
            return
        del conn.outbox[:sent]
        if not conn.outbox and conn.closing:
            self._drop(conn)
        elif conn.sock.fileno() >= 0:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbox else 0)
            if self.selector.get_key(conn.sock).events != events:
                self.selector.modify(conn.sock, events, conn)

    def _drop(self, conn: _Conn) -> None:
        if conn.sock.fileno() >= 0:
            with contextlib.suppress(KeyError):  # unregistered already after a half-close
                self.selector.unregister(conn.sock)
            conn.sock.close()


def listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    return listener


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark HTTP sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sink = Sink(listen(args.host, args.port))

    def stop(*_: Any) -> None:
        sink.running = False

    signal.signal(signal.SIGTERM, stop)
    port = sink.listener.getsockname()[1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    try:
        sink.serve()
    except KeyboardInterrupt:
        pass
    finally:
        sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
