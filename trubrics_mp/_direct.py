"""Keep-alive HTTP/1.1 connections to one host, for requests without a proxy.

The flusher's senders POST a batch and read a short answer, over and over,
to one or two hosts. This module does exactly that over a socket, with the
request head built once and the answer parsed by ``_http1``. Measured on
loopback, CPU per POST of a 100-event body (15 kB), three runs of ``python
-m benchmarks.poster_cpu``: ``requests`` 0.50-0.67 ms, urllib3's connection
pool 0.21-0.26 ms, a bare ``http.client`` connection 0.15-0.18 ms, this
module's pool (the poster, deadline included) 0.09-0.11 ms.

- :class:`DirectPool`: the idle connections to one origin (scheme, host,
  port), newest first. A connection whose socket turned readable while idle
  (the server closed it, or a deadline shut it down) is closed before reuse
  and reconnects. At most ``maxsize`` stay idle.
- :class:`DirectConnection`: connects within the request's
  :class:`~trubrics_mp._deadline.Deadline` (name lookup and TLS handshake
  included), and a reused one joins the deadline of each request it makes,
  so the deadline bounds a request from the lookup to the last byte of the
  answer.
- :class:`DirectAnswer`: the answer, and the way back to the pool: a body
  read to its end on a keep-alive connection returns the connection,
  anything else closes it.

TLS: certificates and host names are verified (``ssl.create_default_context``
with the CA bundle ``requests`` would use; see ``_targets``). Caveat: a server
that closes an idle connection just as a request is sent makes that attempt
fail (``RemoteDisconnected``); the retry policy sends the batch again, as
it would with urllib3.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Optional

from . import _http1
from ._deadline import Deadline, connect_within, current_deadline
from ._http1 import BadAnswer, Head

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
RECV_BYTES = 65_536


def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """Verify certificates and host names against ``ca_bundle`` (a file or a directory)."""
    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)


class DirectConnection:
    """One HTTP/1.1 connection (TLS when given a context) that joins the thread's deadline."""

    owner: Optional[Deadline] = None

    def __init__(
        self, host: str, port: int, timeout_s: float, context: Optional[ssl.SSLContext] = None
    ) -> None:
        self.host = host  # a name or an address (IPv6 without brackets)
        self.port = port
        self.timeout_s = timeout_s
        self.sock: Optional[socket.socket] = None
        self._context = context
        self._pending = b""  # received, not yet parsed

    def exchange(self, head: bytes, body: bytes) -> Head:
        """Send a POST (``head`` from ``_http1.request_head``) and read its answer's head."""
        if self.sock is None:
            self._connect()
        assert self.sock is not None
        self.sock.sendall(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        while True:
            answer = _http1.parse_head(self._head_bytes())
            if not 100 <= answer.status <= 199 or answer.status == 101:
                return answer  # interim answers (100 Continue, 103) are skipped

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes received; ``b""`` once the server closed.

        Always receives whole reads into ``_pending``: a smaller ``recv`` on a
        TLS socket would leave the rest of a record inside the SSL object,
        where neither :attr:`idle_bytes` nor the pool's readability check sees it.
        """
        if not self._pending:
            self._pending = self._recv(RECV_BYTES)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def read_line(self) -> bytes:
        """Bytes up to and including the next LF (a chunk-size or trailer line)."""
        while True:
            end = self._pending.find(b"\n") + 1
            if end:
                line, self._pending = self._pending[:end], self._pending[end:]
                return line
            if len(self._pending) > _http1.MAX_LINE_BYTES:
                raise BadAnswer("a line of the body over 64 KiB")
            self._more("inside a chunked body")

    @property
    def idle_bytes(self) -> int:
        """Bytes received past the answer read (a server that sent more than it said),
        decrypted ones a TLS socket still holds included."""
        pending = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
        return len(self._pending) + pending

    def close(self) -> None:
        sock, self.sock, self._pending = self.sock, None, b""
        if sock is not None:
            sock.close()

    def _head_bytes(self) -> bytes:
        while True:
            end = _http1.head_end(self._pending)
            if end >= 0:
                head, self._pending = self._pending[:end], self._pending[end:]
                return head
            if len(self._pending) > _http1.MAX_HEAD_BYTES:
                raise BadAnswer("an answer head over 64 KiB")
            if not self._pending:
                data = self._recv(RECV_BYTES)
                if not data:
                    raise http.client.RemoteDisconnected(
                        "Remote end closed connection without response"
                    )
                self._pending = data
            else:
                self._more("inside the answer's head")

    def _more(self, where: str) -> None:
        data = self._recv(RECV_BYTES)
        if not data:
            raise BadAnswer(f"the connection closed {where}")
        self._pending += data

    def _recv(self, size: int) -> bytes:
        if self.sock is None:
            raise BadAnswer("the connection was closed")
        return self.sock.recv(size)

    def _connect(self) -> None:
        address = (self.host, self.port)
        deadline = current_deadline()
        if deadline is None:
            sock = socket.create_connection(address, self.timeout_s)
            sock.setsockopt(*NODELAY[0])
        else:
            deadline.watch(self)
            sock = connect_within(deadline, address, self.timeout_s, NODELAY)
        self.sock = sock
        if self._context is not None:
            tls = self._context.wrap_socket(
                sock, server_hostname=self.host, do_handshake_on_connect=False
            )
            self.sock = tls  # before the handshake, so a deadline can shut it down
            tls.do_handshake()


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
        self.host, self.port = host.strip("[]"), port  # an IPv6 literal without its brackets
        self._host_header = _http1.host_header(self.host, port, scheme)
        self._scheme = scheme
        self._timeout_s = timeout_s
        self._maxsize = maxsize
        self._context = context
        self._lock = threading.Lock()
        self._idle: list[DirectConnection] = []
        self._closed = False

    def head(self, path: str, headers: Mapping[str, str]) -> bytes:
        """The request head of a POST to ``path`` here, for :meth:`post`.

        Raises ``ValueError`` (never quoting a value) for what cannot go on the wire.
        """
        return _http1.request_head(self._host_header, path, headers)

    def post(self, head: bytes, body: bytes) -> DirectAnswer:
        """Send a POST (``head`` from :meth:`head`) and read the answer's head.

        Raises what the connection raised.
        """
        conn = self._take()
        deadline = current_deadline()
        if deadline is not None:  # a reused connection joins this request's deadline too
            deadline.watch(conn)
        try:
            return DirectAnswer(conn.exchange(head, body), conn, self)
        except BaseException:
            conn.close()
            self.give_back(conn)
            raise

    def give_back(self, conn: DirectConnection) -> None:
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

    def _take(self) -> DirectConnection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            context = self._context if self._scheme == "https" else None
            return DirectConnection(self.host, self.port, self._timeout_s, context)
        if conn.sock is not None and _readable_now(conn.sock):
            conn.close()  # closed by the server, or shut down: reconnects on request
        return conn


class DirectAnswer:
    """An answer whose head arrived; :meth:`release` once done with it."""

    def __init__(self, head: Head, conn: DirectConnection, pool: DirectPool) -> None:
        self.status = head.status
        self._head = head
        self._conn = conn
        self._pool = pool
        self._framing, self._left = head.framing  # bytes left of the body or of this chunk
        self._done = self._framing == _http1.NONE

    def header(self, name: str) -> Optional[str]:
        return self._head.header(name)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body; ``b""`` at its end. Raises if it is cut off."""
        if self._done or size <= 0:
            return b""
        if self._framing == _http1.CLOSE:
            data = self._conn.read(size)
            self._done = not data
            return data
        if self._framing == _http1.CHUNKED and self._left == 0:
            self._left = _http1.chunk_size(self._conn.read_line())
            if self._left == 0:
                while self._conn.read_line().strip():  # trailers, up to the blank line
                    pass
                self._done = True
                return b""
        data = self._conn.read(min(size, self._left))
        if not data:
            raise BadAnswer("the connection closed before the answer's body ended")
        self._left -= len(data)
        if self._left == 0:
            if self._framing == _http1.LENGTH:
                self._done = True
            elif self._conn.read_line().strip():
                raise BadAnswer("a chunk longer than its size line said")
        return data

    def release(self) -> None:
        """Back to the pool if the body was read to its end, else closed first."""
        reusable = (
            self._done
            and self._framing != _http1.CLOSE
            and self._head.keep_alive
            and not self._conn.idle_bytes
        )
        if not reusable:
            self._conn.close()
        self._pool.give_back(self._conn)


def _readable_now(sock: socket.socket) -> bool:
    """Something to read, an end or an error waits on ``sock`` (an idle connection
    should have none of them)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
