"""Reading the shared queue: the listener and one connection per client process.

The reader accepts connections (the peer's uid checked), greets each with a
hello that carries the flusher's generation, and reads whole messages,
handing each to a callback with the lane it came by (``proto.PIPE`` or
``proto.SOCKET``). It does not interpret messages: the flusher does.
A connection's first message brings the read end of its pipe (see ``_pipe``),
whose records reach the same callback as the socket's messages.
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
from ._pipe import READ_BYTES, is_pipe, read_chunk, split_records
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
    greeted: bool = False  # its first message (which may bring the pipe) was read
    pipe: Optional[int] = None  # the read end of its pipe
    pipe_rest: bytes = b""  # a record's beginning, read without its end (never, in practice)
    pipe_armed: bool = False  # its pipe is in the selector
    pipe_naps_until: Optional[float] = None  # its pipe is left unwatched until then
    pipe_quiet_polls: int = 0  # reads in a row that found its pipe empty (see _flusher)
    spool_refused: bool = False  # the spool refused some of its events (see _durable)
    next_disk_confirm_at: float = 0.0  # monotonic seconds (see Answers.confirm_on_disk)
    disk_owed: bytes = b""  # the on-disk confirmation it is owed (see Answers)
    told_refused: bool = False  # it heard that nothing of it is sent again (see Answers)
    token: str = ""  # its client's, for this connection (see _resend)
    lanes: list[int] = dataclasses.field(default_factory=lambda: [0, 0])  # events read per lane

    @property
    def open(self) -> bool:
        return self.sock.fileno() != -1

    def number(self, lane: int, events: int = 1) -> int:
        """Count ``events`` read from ``lane``, bad ones too; the number of the first
        (the process numbers its sends the same way, see ``_resend``)."""
        first = self.lanes[lane]
        self.lanes[lane] = first + events
        return first


@dataclasses.dataclass(eq=False)
class PipeOf:
    """What the selector holds for a connection's pipe."""

    conn: Conn


OnMessage = Callable[[Conn, int, bytes, int], None]  # kind, payload, lane
OnRecords = Callable[[Conn, list[bytes], int], None]  # a lane's records
_NEWLINE, _PLAIN = proto.END[0], proto.EVENT[0]
HAND_ON_BYTES = 64 * 1024  # plain events read from a socket are handed on in groups this big


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
        self._pipe_buffer = bytearray(READ_BYTES)
        self.connections = 0
        self.paused = False  # connections unregistered: their messages wait in the kernel
        self.accept_paused_until: Optional[float] = None  # out of descriptors: backing off
        self.accept_failures = 0
        self._conns: set[Conn] = set()
        self._napping: set[Conn] = set()  # connections whose pipe naps (see nap)
        self.on_close: Callable[[Conn], None] = lambda conn: None
        self.on_torn: Callable[[Conn, int], None] = lambda conn, pieces: None
        self.on_records: OnRecords = self.each_record  # a pipe read's records
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
        """Read up to ``limit`` messages from ``conn``; close it at end of file.

        Plain events are handed on together (``on_records``, as a pipe read's
        are), at the latest every ``HAND_ON_BYTES``; any other message first
        hands on the events read before it.
        """
        view = memoryview(self._buffer)
        events: list[bytes] = []
        nbytes = 0
        for _ in range(limit):
            if self.paused:
                break
            try:
                size = conn.sock.recv_into(self._buffer) if conn.greeted else self._first(conn)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:
                # The peer closed with a message of ours unread (a hello, a late
                # reply). The kernel reports that once, before what it still has
                # queued from the peer: read on.
                continue
            except OSError:
                size = 0
            plain = size > 0 and view[0] == _PLAIN and view[size - 1] == _NEWLINE
            if plain:
                events.append(bytes(view[: size - 1]))
                nbytes += size
                if nbytes < HAND_ON_BYTES:
                    continue
            nbytes = self._hand_on(conn, events)
            if not conn.open:
                return  # a bad event among them closed it
            if size == 0:
                self.close(conn)
                return
            if plain:
                continue
            kind = view[0]
            if kind in proto.EVENT_KINDS and view[size - 1] == _NEWLINE:
                size -= 1  # an event ends with a newline (a record, in the pipe)
            self._on_message(conn, kind, bytes(view[1:size]), proto.SOCKET)
            if not conn.open:
                return  # the handler closed it
        self._hand_on(conn, events)

    def _hand_on(self, conn: Conn, events: list[bytes]) -> int:
        """Hand on (and forget) the plain events read so far; 0, their bytes now."""
        if events and conn.open:
            self.on_records(conn, events[:], proto.SOCKET)
        events.clear()
        return 0

    def _first(self, conn: Conn) -> int:
        """Read the first message into the buffer, taking the pipe that comes with it."""
        message, fds, _flags, _address = socket.recv_fds(conn.sock, len(self._buffer), 1)
        conn.greeted = True
        for fd in fds[1:]:
            os.close(fd)
        if fds and is_pipe(fds[0]):
            conn.pipe = fds[0]
            self._watch_pipe(conn)
        elif fds:
            os.close(fds[0])
        self._buffer[: len(message)] = message
        return len(message)

    def read_pipe(self, conn: Conn, limit: int, even_paused: bool = False) -> int:
        """Hand on the records waiting in ``conn``'s pipe, up to about ``limit``;
        the number of bytes read.

        Every record of a read is handed on, even once the reader has paused:
        the bound on what is held may be passed by one read (see ``_batching``).
        """
        taken = nbytes = 0
        while conn.pipe is not None and conn.open and taken < limit:
            if self.paused and not even_paused:
                break
            try:
                chunk = read_chunk(conn.pipe, self._pipe_buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:  # every writer closed it: only the socket is left
                self._close_pipe(conn)
                break
            nbytes += len(chunk)
            records, conn.pipe_rest = split_records(conn.pipe_rest, chunk)
            self.on_records(conn, records, proto.PIPE)
            taken += len(records)
        return nbytes

    def each_record(self, conn: Conn, records: list[bytes], lane: int) -> None:
        """Hand each record to ``on_message`` until one closes the connection."""
        for record in records:
            if conn.open:
                self._on_message(conn, record[0] if record else 0, record[1:], lane)

    def nap(self, conn: Conn, until: float) -> None:
        """Leave ``conn``'s pipe unwatched until ``until``: its writes wake nobody.

        A write to a pipe that a reader waits on costs the writer a wake-up
        (1.5 µs in a loop; 10 µs or more for the first write after a pause, on
        this project's virtual machines); a burst of events read a few
        milliseconds later costs the writers nothing more and the flusher one read.
        """
        if conn.pipe is not None:
            conn.pipe_naps_until = until
            self._napping.add(conn)
            self._watch_pipe(conn)

    def wake_pipes(self, now: float) -> list[Conn]:
        """End the naps due by ``now``; their connections, for the caller to read
        (then to :meth:`nap` again or :meth:`watch`)."""
        woken = [c for c in self._napping if (c.pipe_naps_until or 0.0) <= now]
        for conn in woken:
            self._napping.discard(conn)
            conn.pipe_naps_until = None
        return woken

    def watch(self, conn: Conn) -> None:
        """Watch ``conn``'s pipe again: its next write wakes the reader."""
        if conn.pipe_naps_until is not None:
            self._napping.discard(conn)
            conn.pipe_naps_until = None
        self._watch_pipe(conn)

    def next_pipe_wake(self) -> Optional[float]:
        return min((c.pipe_naps_until or 0.0 for c in self._napping), default=None)

    def _watch_pipe(self, conn: Conn) -> None:
        """Keep the rule: a pipe is in the selector iff open, not paused, not napping."""
        fd = conn.pipe
        if fd is None:
            return  # closed (_close_pipe unregistered it)
        wanted = not self.paused and conn.pipe_naps_until is None
        if wanted and not conn.pipe_armed:
            self._selector.register(fd, selectors.EVENT_READ, PipeOf(conn))
        elif conn.pipe_armed and not wanted:
            self._selector.unregister(fd)
        conn.pipe_armed = wanted

    def read_all(self, limit_per_connection: int) -> None:
        """Accept, then read every message already waiting on every connection."""
        self.accept()
        for conn in list(self._conns):
            if conn.open:
                self.read_pipe(conn, limit_per_connection)
            if conn.open:
                self.read(conn, limit_per_connection)

    def close(self, conn: Conn, take_pipe: bool = True) -> None:
        """Close ``conn``; with ``take_pipe``, first hand on what its pipe still holds.

        Without it (a bad message, the flusher's exit) the pipe is closed first,
        then the socket: its process takes back what is left (see ``_pipe``).
        """
        if not conn.open:
            return
        if take_pipe:  # paused or not: its process may be gone (a pipe holds 1 MiB at most)
            self.read_pipe(conn, proto.MAX_MESSAGE_BYTES, even_paused=True)
        self._close_pipe(conn)
        if not conn.open:
            return  # a bad record in the pipe closed it meanwhile
        if not self.paused:
            self._selector.unregister(conn.sock)
        self._conns.discard(conn)
        conn.sock.close()
        self.connections -= 1
        self.on_close(conn)

    def _close_pipe(self, conn: Conn) -> None:
        if conn.pipe is None:
            return
        fd = conn.pipe
        if conn.pipe_armed:
            self._selector.unregister(fd)
            conn.pipe_armed = False
        conn.pipe = conn.pipe_naps_until = None
        self._napping.discard(conn)
        os.close(fd)
        if conn.pipe_rest:  # the beginning of a record whose end never came
            conn.pipe_rest = b""
            self.on_torn(conn, 1)

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
                self._watch_pipe(conn)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            for conn in self._conns:
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
                self._watch_pipe(conn)

    def discard_waiting(self) -> dict[Conn, int]:
        """Read and drop every event still waiting on a socket (at exit); the number
        of events per connection. What the pipes hold is left to the processes
        (see ``close``)."""
        self.resume()
        dropped: dict[Conn, int] = {}
        for conn in list(self._conns):
            dropped[conn] = 0
            while conn.open:
                try:
                    message = conn.sock.recv(proto.MAX_MESSAGE_BYTES)
                except ConnectionResetError:
                    continue
                except OSError:
                    break
                if not message:
                    break
                dropped[conn] += message[0] in proto.EVENT_KINDS
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
