"""Tiny HTTP servers in threads of the test process, on 127.0.0.1 and free ports.

- :class:`ScriptedServer`: ``http.server`` answering every request as a
  function says (redirects, an API that echoes the key...) and recording each
  request it got (method, path, headers, body).
- :class:`RawServer`: a socket server that reads one request, then lets a
  function write whatever bytes it likes, however slowly (a status line one
  byte per second, a 200 whose body is cut off...).
- :class:`ThreadedCollector`: the real collector (``make_server``) in a
  thread, for settings the subprocess fixture does not offer (a small
  ``max_body_bytes``).

Each is a context manager; leaving it stops its threads and closes its sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from trubrics_mp.collector import make_server
from trubrics_mp.collector._store import EventStore

Answer = tuple[int, dict[str, str], bytes]
TLS_DIR = Path(__file__).parent / "tls"  # made by openssl, valid until 2126; see its README
TEST_CA = TLS_DIR / "ca.pem"


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request a server got; header names are lower-case; ``peer`` is the client's port."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: int = 0


class _Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []

    def add(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)


_Served = TypeVar("_Served", bound="_ServedInThread")


class _ServedInThread:
    """An HTTP server on 127.0.0.1 served by a thread while the ``with`` block runs."""

    def __init__(self, server: ThreadingHTTPServer, scheme: str = "http") -> None:
        self._server = server
        self._scheme = scheme
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self: _Served) -> _Served:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class ScriptedServer(_Recorder, _ServedInThread):
    """Answers each request with ``answer(seen)``: (status, headers, body).

    With ``tls`` it speaks HTTPS with the certificate in ``support/tls``
    (``localhost`` and ``127.0.0.1``, signed by the test CA ``TEST_CA``).
    """

    def __init__(self, answer: Callable[[Seen], Answer], tls: bool = False) -> None:
        super().__init__()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.command, self.path, headers, body, self.client_address[1])
                recorder.add(seen)
                status, extra, payload = answer(seen)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(payload)), **extra}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_DIR / "server.pem", TLS_DIR / "server.key")
            server.socket = context.wrap_socket(server.socket, server_side=True)
        _ServedInThread.__init__(self, server, "https" if tls else "http")


def read_request(conn: socket.socket) -> Optional[bytes]:
    """Read one request (headers and a Content-Length body); its head, None if the peer left."""
    request = read_whole_request(conn)
    return None if request is None else request[0]


def read_whole_request(conn: socket.socket) -> Optional[tuple[bytes, bytes]]:
    """Read one request (headers and a Content-Length body); head and body, None if
    the peer left."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head, body


class RawServer:
    """Reads each request, then calls ``reply(conn, stopping)`` to write raw bytes.

    ``reply`` should return soon once ``stopping`` is set (the server sets it
    when leaving); the connection is closed after ``reply`` returns, unless it
    returns True (then the next request on it is read). ``heads`` holds every
    request head read, ``connections`` counts the connections accepted.
    """

    def __init__(
        self, reply: Callable[[socket.socket, threading.Event], Optional[bool]], tls: bool = False
    ) -> None:
        self._reply = reply
        self._tls: Optional[ssl.SSLContext] = None
        if tls:  # the certificate of ScriptedServer's, signed by TEST_CA
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(TLS_DIR / "server.pem", TLS_DIR / "server.key")
        self.stopping = threading.Event()
        self.requests = 0
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self._accepted: list[socket.socket] = []  # shut down on exit: a kept one waits to read
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._accepted.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                if self._tls is not None:
                    conn = self._tls.wrap_socket(conn, server_side=True)
                while True:
                    request = read_whole_request(conn)
                    if request is None:
                        return
                    with self._lock:
                        self.requests += 1
                        self.heads.append(request[0])
                        self.bodies.append(request[1])
                    if not self._reply(conn, self.stopping):
                        return
            except OSError:
                pass

    def __enter__(self) -> RawServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._acceptor.join(10)
        self._listener.close()
        with self._lock:
            accepted = list(self._accepted)
        for conn in accepted:
            with contextlib.suppress(OSError):  # closed by its thread already
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)


def drip(
    data: bytes, every_s: float = 1.0, first: bytes = b""
) -> Callable[[socket.socket, threading.Event], None]:
    """A ``RawServer`` reply: ``first`` at once, then ``data`` one byte per ``every_s`` s."""

    def reply(conn: socket.socket, stopping: threading.Event) -> None:
        if first:
            conn.sendall(first)
        for byte in data:
            if stopping.wait(every_s):
                return
            conn.sendall(bytes((byte,)))

    return reply


def cut_off(head: bytes, partial_body: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """A ``RawServer`` reply: the status and headers, part of the body, then close."""

    def reply(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(head + partial_body)

    return reply


class ThreadedCollector(_ServedInThread):
    """The real collector in a thread, storing into ``db_path``."""

    def __init__(self, db_path: Path, max_body_bytes: int) -> None:
        self.store = EventStore(db_path)
        self.log: list[str] = []
        server = make_server(self.store, port=0, max_body_bytes=max_body_bytes, log=self.log.append)
        super().__init__(server)

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        self.store.close()
