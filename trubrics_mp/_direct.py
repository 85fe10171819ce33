"""Keep-alive ``http.client`` connections to one host, for requests without a proxy.

The flusher's senders POST a batch and read a short answer, over and over,
to one or two hosts. ``http.client`` does exactly that; the layers above it
cost CPU on every request. Measured on loopback, CPU per POST of a 100-event
body (15 kB), three runs of ``python -m benchmarks.poster_cpu``: ``requests``
0.37-0.45 ms, urllib3's connection pool 0.14-0.17 ms, this module's pool
0.11-0.14 ms, a bare ``http.client`` connection 0.08-0.11 ms.

- :class:`DirectPool`: the idle connections to one origin (scheme, host,
  port), newest first. A connection whose socket turned readable while idle
  (the server closed it, or a deadline shut it down) is closed before reuse
  and reconnects. At most ``maxsize`` stay idle.
- :class:`DirectConnection` and :class:`DirectTLSConnection`: connect within
  the request's :class:`~trubrics_mp._deadline.Deadline` (name lookup
  included), and a reused one joins the deadline of each request it makes,
  so the deadline bounds a request from the lookup to the last byte of the
  answer.
- :class:`DirectAnswer`: the answer, and the way back to the pool: a body
  read to its end returns the connection, anything else closes it.

TLS: certificates and host names are verified (``ssl.create_default_context``
with the CA bundle ``requests`` would use; see ``_targets``). Caveat: a server
that closes an idle connection just as a request is sent makes that attempt
fail (``RemoteDisconnected``); the retry policy sends the batch again, as
it would with urllib3.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from typing import Any, Optional, Union

from urllib3.util.wait import wait_for_read

from ._deadline import Deadline, connect_within, current_deadline

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def _connect(
    conn: Any, address: tuple[str, int], timeout: Any, source: Any = None
) -> socket.socket:
    """``http.client``'s connect, bounded by the thread's deadline when there is one."""
    deadline = current_deadline()
    if deadline is None:
        sock = socket.create_connection(address, timeout, source)
        sock.setsockopt(*NODELAY[0])
        return sock
    deadline.watch(conn)
    per_operation = timeout if isinstance(timeout, (int, float)) else None
    return connect_within(deadline, address, per_operation, NODELAY, source)


class DirectConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection that joins the thread's current deadline."""

    owner: Optional[Deadline] = None

    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._create_connection = lambda *args: _connect(self, *args)


class DirectTLSConnection(http.client.HTTPSConnection):
    """The TLS twin of :class:`DirectConnection` (the handshake is bounded too)."""

    owner: Optional[Deadline] = None

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._create_connection = lambda *args: _connect(self, *args)


Direct = Union[DirectConnection, DirectTLSConnection]


def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """Verify certificates and host names against ``ca_bundle`` (a file or a directory)."""
    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)


class DirectPool:
    """Idle keep-alive connections to one origin, shared by the sender threads."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        timeout_s: float,
        maxsize: int,
        context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.host, self.port = host, port
        self._scheme = scheme
        self._timeout_s = timeout_s
        self._maxsize = maxsize
        self._context = context
        self._lock = threading.Lock()
        self._idle: list[Direct] = []
        self._closed = False

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> DirectAnswer:
        """Send the request and read the answer's head; raises what the connection raised."""
        conn = self._take()
        deadline = current_deadline()
        if deadline is not None:  # a reused connection joins this request's deadline too
            deadline.watch(conn)
        try:
            conn.request("POST", path, body, headers)
            return DirectAnswer(conn.getresponse(), conn, self)
        except BaseException:
            conn.close()
            self.give_back(conn)
            raise

    def give_back(self, conn: Direct) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> Direct:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            return self._new()
        if conn.sock is not None and wait_for_read(conn.sock, timeout=0.0):
            conn.close()  # closed by the server, or shut down: reconnects on request
        return conn

    def _new(self) -> Direct:
        if self._scheme == "https":
            assert self._context is not None
            return DirectTLSConnection(self.host, self.port, self._timeout_s, self._context)
        return DirectConnection(self.host, self.port, self._timeout_s)


class DirectAnswer:
    """An answer whose head arrived; :meth:`release` once done with it."""

    def __init__(self, response: http.client.HTTPResponse, conn: Direct, pool: DirectPool) -> None:
        self.status = response.status
        self._response = response
        self._conn = conn
        self._pool = pool

    def header(self, name: str) -> Optional[str]:
        return self._response.getheader(name)

    def read(self, size: int) -> bytes:
        return self._response.read(size)

    def release(self) -> None:
        """Back to the pool if the body was read to its end, else closed first."""
        if not self._response.isclosed():
            self._conn.close()
        self._pool.give_back(self._conn)
