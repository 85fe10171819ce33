"""Reading the shared queue: the listener and one connection per client process.

The reader accepts connections (the peer's uid checked), greets each with a
hello that carries the flusher's generation, and reads whole messages,
handing each to a callback. It does not interpret messages: the flusher does.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import selectors
import socket
import time
from typing import Callable, Optional

from . import _protocol as proto
from ._route import Route

ACCEPT_BACKOFF_S = 0.1
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclasses.dataclass(eq=False)
class Conn:
    """One client process's connection; ``dropped`` counts its events lost since it
    last asked for a flush (so that its next ``flush()`` says False)."""

    sock: socket.socket
    pid: int
    dropped: int = 0
    complained: bool = False  # a bad message from it was logged already
    events_read: int = 0
    confirming: bool = False  # a confirmation of its events waits (see _waiters)
    route: Optional[Route] = None  # where its events go; None: the flusher's own settings

    @property
    def open(self) -> bool:
        return self.sock.fileno() != -1


OnMessage = Callable[[Conn, int, bytes], None]


class Reader:
    """The listener and every open connection, registered in one selector.

    Invariants: every open connection is registered with itself as the key's
    data, the listener with ``"accept"``; once :meth:`stop_listening` ran, no
    connection is accepted again.
    """

    def __init__(
        self,
        listener: socket.socket,
        selector: selectors.BaseSelector,
        on_message: OnMessage,
        hello: bytes,
        logger: logging.Logger,
    ) -> None:
        self._listener: Optional[socket.socket] = listener
        self._selector = selector
        self._on_message = on_message
        self._hello = hello
        self._log = logger
        self._buffer = bytearray(proto.MAX_MESSAGE_BYTES)
        self.connections = 0
        self.paused = False  # connections unregistered: their messages wait in the kernel
        self.accept_paused_until: Optional[float] = None  # out of descriptors: backing off
        self.accept_failures = 0
        self._conns: set[Conn] = set()
        self.on_close: Callable[[Conn], None] = lambda conn: None
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, "accept")

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def accept(self) -> None:
        """Accept every waiting connection; out of descriptors, back off and serve on."""
        while self._listener is not None and self.accept_paused_until is None:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                self._back_off(exc)
                return
            pid, uid = proto.peer_pid_uid(sock)
            if uid != os.getuid():
                self._log.error("refused a connection from uid %d (pid %d)", uid, pid)
                sock.close()
                continue
            sock.setblocking(False)
            conn = Conn(sock, pid)
            self._conns.add(conn)
            if not self.paused:
                self._selector.register(sock, selectors.EVENT_READ, conn)
            self.connections += 1
            reply(conn, self._hello)

    def _back_off(self, exc: OSError) -> None:
        """Stop accepting for ``ACCEPT_BACKOFF_S`` (the waiting peers stay in the backlog)."""
        assert self._listener is not None
        self._selector.unregister(self._listener)
        self.accept_paused_until = time.monotonic() + ACCEPT_BACKOFF_S
        self.accept_failures += 1
        if self.accept_failures == 1 or self.accept_failures % 1000 == 0:
            self._log.error(
                "cannot accept a connection (%s, %d times so far): retrying in %.1f s",
                exc.strerror,
                self.accept_failures,
                ACCEPT_BACKOFF_S,
            )

    def resume_accepting(self, now: float) -> None:
        """Accept again once the back-off has passed (called by the main loop)."""
        until = self.accept_paused_until
        if until is not None and now >= until:
            self.accept_paused_until = None
            if self._listener is not None:
                self._selector.register(self._listener, selectors.EVENT_READ, "accept")
                self.accept()

    def read(self, conn: Conn, limit: int) -> None:
        """Read up to ``limit`` messages from ``conn``; close it at end of file."""
        view = memoryview(self._buffer)
        for _ in range(limit):
            if self.paused:
                return
            try:
                size = conn.sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionResetError:
                # The peer closed with a message of ours unread (a hello, a late
                # reply). The kernel reports that once, before what it still has
                # queued from the peer: read on.
                continue
            except OSError:
                size = 0
            if size == 0:
                self.close(conn)
                return
            self._on_message(conn, view[0], bytes(view[1:size]))
            if not conn.open:
                return  # the handler closed it

    def read_all(self, limit_per_connection: int) -> None:
        """Accept, then read every message already waiting on every connection."""
        self.accept()
        for conn in list(self._conns):
            if conn.open:
                self.read(conn, limit_per_connection)

    def close(self, conn: Conn) -> None:
        if not conn.open:
            return
        if not self.paused:
            self._selector.unregister(conn.sock)
        self._conns.discard(conn)
        conn.sock.close()
        self.connections -= 1
        self.on_close(conn)

    def open_connections(self) -> list[Conn]:
        return [conn for conn in self._conns if conn.open]

    def process_count(self) -> int:
        """How many processes have a connection open (a process may hold several)."""
        return len({conn.pid for conn in self._conns})

    def has_pid(self, pid: int) -> bool:
        """Whether a connection of process ``pid`` is open."""
        return any(conn.pid == pid for conn in self._conns)

    def pause(self) -> None:
        """Stop reading connections (the flusher holds its bound): back-pressure."""
        if not self.paused:
            self.paused = True
            for conn in self._conns:
                self._selector.unregister(conn.sock)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            for conn in self._conns:
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def discard_waiting(self) -> int:
        """Read and drop every event still waiting (at exit); the number of events."""
        self.paused = False
        dropped = 0
        for conn in list(self._conns):
            while conn.open:
                try:
                    message = conn.sock.recv(proto.MAX_MESSAGE_BYTES)
                except ConnectionResetError:
                    continue
                except OSError:
                    break
                if not message:
                    break
                dropped += message[0] in proto.EVENT_KINDS
        return dropped

    def stop_listening(self) -> None:
        """Close the listener: new processes can no longer connect (they start a new one)."""
        if self._listener is not None:
            if self.accept_paused_until is None:
                self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None


def reply(conn: Conn, message: bytes) -> bool:
    """Send ``message`` to ``conn`` without blocking; False if it could not take it.

    A peer that is gone or not reading is no error: there is nobody to tell.
    """
    try:
        conn.sock.send(message, proto.SEND_FLAGS)
    except OSError:
        return False
    return True
