"""HTTP side of the collector: a Trubrics-compatible ingestion endpoint.

``POST /publish_events`` and ``POST /publish_llm_events`` accept what the official SDK
sends; ``GET /events``, ``GET /batches`` and ``GET /health`` read the store back.
Every response is JSON with a Content-Length, so HTTP/1.1 keep-alive works. When a
request body is left unread (413, 411, a bad Content-Length), the connection is
closed after the response instead, with a lingering close: the answer is sent at
once, then what the client still sends is read and dropped (until it stops, for at
most ``LINGER_S`` seconds and ``LINGER_BYTES`` bytes, or ``LINGER_IDLE_S`` seconds
without data) so that a client still sending its body can read the answer. Closing
with unread data would make the kernel reset the connection under that client.

Caveats: plain HTTP on one IPv4 address, no TLS; the ``x-api-key`` header must be
present but its value is never checked (nor logged).
"""

import json
import socket
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, cast
from urllib.parse import parse_qs, urlsplit

from ._store import EventStore, key_id, normalise_since
from ._validate import KIND_EVENT, KIND_LLM_EVENT, BatchError, validate_batch

Response = tuple[int, dict[str, str], bytes]
"""Status, extra headers, JSON body."""

LogFn = Callable[[str], None]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
IDLE_TIMEOUT_S = 300.0
"""An idle keep-alive connection is closed after this long (frees its thread)."""
LINGER_S = 30.0
LINGER_IDLE_S = 2.0
LINGER_BYTES = 256 * 1024 * 1024

POST_KINDS = {"/publish_events": KIND_EVENT, "/publish_llm_events": KIND_LLM_EVENT}
EVENT_QUERY_KEYS = ("user_id", "event", "since", "limit")


def _print_flush(line: str) -> None:
    print(line, flush=True)


def json_response(status: int, payload: Any, headers: Optional[dict[str, str]] = None) -> Response:
    """Build a response tuple whose body is ``payload`` as JSON."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return status, dict(headers or {}), body


def error_response(status: int, detail: str, headers: Optional[dict[str, str]] = None) -> Response:
    """Build an error response: ``{"detail": detail}``."""
    return json_response(status, {"detail": detail}, headers)


class _RequestError(Exception):
    """Raised inside a handler to answer with an error response."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.response = error_response(status, detail)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class CollectorServer(ThreadingHTTPServer):
    """A threading HTTP server carrying the collector's settings."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type["CollectorHandler"],
        store: EventStore,
        latency_s: float,
        max_body_bytes: int,
        log: LogFn,
    ) -> None:
        self.store = store
        self.latency_s = latency_s
        self.max_body_bytes = max_body_bytes
        self.log = log
        super().__init__(address, handler_class)

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return int(self.server_address[1])


class CollectorHandler(BaseHTTPRequestHandler):
    """Request handler; subclass it and override ``before_post`` to inject faults."""

    protocol_version = "HTTP/1.1"
    server_version = "trubrics-mp-collector"
    timeout = IDLE_TIMEOUT_S

    linger = False
    """Set when the request body is left unread: the answer is followed by a lingering close."""

    @property
    def collector(self) -> CollectorServer:
        return cast(CollectorServer, self.server)

    # ---- hook -------------------------------------------------------------------
    def before_post(self, path: str) -> Optional[Response]:
        """Called first for every POST, before anything is read or checked.

        Return ``(status, headers, body)`` to answer with that instead (the request
        body is read and discarded so keep-alive stays correct), or None to go on.
        """
        return None

    # ---- dispatch ---------------------------------------------------------------
    def do_POST(self) -> None:
        response = self._run(self._handle_post)
        if self.collector.latency_s > 0:
            time.sleep(self.collector.latency_s)
        self._send(response)

    def do_GET(self) -> None:
        self._send(self._run(self._handle_get))

    def _run(self, handler: Callable[[], Response]) -> Response:
        """Call ``handler``; errors become JSON responses, never a crashed server."""
        try:
            return handler()
        except _RequestError as exc:
            return exc.response
        except Exception as exc:
            self.close_connection = True  # the body may be half read
            self.collector.log(
                f"error: {self.command} {urlsplit(self.path).path}: {exc!r}\n"
                + traceback.format_exc().rstrip()
            )
            return error_response(500, f"internal error: {type(exc).__name__}")

    # ---- POST -------------------------------------------------------------------
    def _handle_post(self) -> Response:
        path = urlsplit(self.path).path
        injected = self.before_post(path)
        if injected is not None:
            self._discard_body()
            return injected
        kind = POST_KINDS.get(path)
        if kind is None:
            self._discard_body()
            raise _RequestError(404, f"not found: POST {path}")
        self._check_post_headers()
        events = self._decode_batch(self._read_body(), kind)
        key = key_id(self.headers.get("x-api-key", "").strip())
        batch_id = self.collector.store.add_batch(kind, events, key)
        self.collector.log(f"accepted {len(events)} event(s) on {path} (batch {batch_id})")
        return json_response(200, {"accepted": len(events)})

    def _check_post_headers(self) -> None:
        """401 without an API key, 415 unless the body is declared as JSON."""
        if not self.headers.get("x-api-key", "").strip():
            self._discard_body()
            raise _RequestError(401, "missing x-api-key header")
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            self._discard_body()
            raise _RequestError(415, "Content-Type must be application/json")

    def _content_length(self) -> int:
        """The declared body length; 411, 400 or 413 (closing the connection) if unusable."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = self.linger = True
            raise _RequestError(411, "Content-Length header required")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = self.linger = True
            raise _RequestError(400, "invalid Content-Length header")
        if length > self.collector.max_body_bytes:
            self.close_connection = self.linger = True
            raise _RequestError(
                413, f"body of {length} bytes exceeds {self.collector.max_body_bytes} bytes"
            )
        return length

    def _read_body(self) -> bytes:
        length = self._content_length()
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise _RequestError(400, "request body shorter than Content-Length")
        return body

    def _discard_body(self) -> None:
        """Read and drop the body if it is small enough, else close the connection."""
        try:
            self._read_body()
        except _RequestError:
            self.close_connection = True

    def _decode_batch(self, body: bytes, kind: str) -> list[dict[str, Any]]:
        try:
            decoded = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise _RequestError(422, "body is not valid UTF-8") from None
        except (ValueError, RecursionError) as exc:
            raise _RequestError(422, f"invalid JSON: {exc}") from None
        try:
            return validate_batch(decoded, kind)
        except BatchError as exc:
            raise _RequestError(422, exc.detail) from None

    # ---- GET --------------------------------------------------------------------
    def _handle_get(self) -> Response:
        parts = urlsplit(self.path)
        store = self.collector.store
        if parts.path == "/health":
            counts = {"events": store.count_events(), "batches": store.count_batches()}
            return json_response(200, {"ok": True, **counts})
        if parts.path == "/batches":
            return json_response(200, store.batches())
        if parts.path == "/events":
            return json_response(200, store.query(**_event_filters(parts.query)))
        raise _RequestError(404, f"not found: GET {parts.path}")

    # ---- output -----------------------------------------------------------------
    def _send(self, response: Response) -> None:
        """Write a complete response; a vanished client only closes the connection."""
        status, headers, body = response
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return
        if self.linger:
            self._linger_close()

    def _linger_close(self) -> None:
        """End the answer (FIN), then read and drop what the client still sends."""
        sock = self.connection
        deadline = time.monotonic() + LINGER_S
        dropped = 0
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(LINGER_IDLE_S)
            while dropped < LINGER_BYTES and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                dropped += len(chunk)
        except OSError:
            return  # idle too long, or the client reset: either way it had the answer

    def send_error(
        self, code: int, message: Optional[str] = None, explain: Optional[str] = None
    ) -> None:
        """Errors raised by http.server itself (bad request line, 501...) as JSON too."""
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            # An unparseable request line leaves http.server's HTTP/0.9 default, which
            # would suppress the status line and headers: answer in HTTP/1.x instead.
            self.request_version = "HTTP/1.0"
        detail = message or HTTPStatus(code).phrase
        if getattr(self, "command", "") == "HEAD" or code < 200 or code in (204, 304):
            self.send_response(code)
            self.send_header("Connection", "close")
            self.end_headers()
            return
        self._send(error_response(code, detail))

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the access log (the collector logs accepted batches itself)."""


def _event_filters(query: str) -> dict[str, Any]:
    """``GET /events`` query string to ``EventStore.query`` arguments (400 if bad)."""
    params = parse_qs(query, keep_blank_values=False)
    unknown = sorted(set(params) - set(EVENT_QUERY_KEYS))
    if unknown:
        raise _RequestError(400, f"unknown query parameter(s): {', '.join(unknown)}")
    filters: dict[str, Any] = {key: values[-1] for key, values in params.items()}
    if "limit" in filters:
        try:
            filters["limit"] = int(filters["limit"])
        except ValueError:
            filters["limit"] = -1
        if filters["limit"] < 0:
            raise _RequestError(400, "limit must be a non-negative integer")
    if "since" in filters:
        try:
            normalise_since(filters["since"])
        except ValueError:
            raise _RequestError(400, "since must be an ISO 8601 time") from None
    return filters


def make_server(
    store: EventStore,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    latency_s: float = 0.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log: LogFn = _print_flush,
    handler_class: type[CollectorHandler] = CollectorHandler,
) -> CollectorServer:
    """Bind (port 0 picks a free port) and return the server; call ``serve_forever``.

    ``latency_s`` delays every POST response, simulating a cloud round trip.
    """
    if latency_s < 0:
        raise ValueError("latency_s must be >= 0")
    return CollectorServer((host, port), handler_class, store, latency_s, max_body_bytes, log)
