"""One process's end of the shared queue: its connection, its small buffer, its counters.

``send`` is on the path of every ``track()``: one non-blocking ``send(2)``
of one message, no lock, no thread. When the socket is full the message
waits in a bounded per-process buffer (drained first on the next call);
when that is full too it is dropped and counted. A broken connection means
the flusher died or left: the first process to notice has its
:class:`Supervisor` start a new one on the same path.

What a dead flusher took with it is counted here, as ``flusher_gone``: the
events sent on the connection that the flusher had not confirmed settled
(its ``K``, ``B`` and flush answers, see ``_protocol``). That is an upper
bound: the flusher may have delivered some of them just before it died,
unconfirmed. A process that tracks reads confirmations at its periodic
check (every ``_logs.LEVEL_CHECK_S``), so they lag by about a batch's
delivery time.
"""

from __future__ import annotations

import collections
import itertools
import logging
import select
import socket
import threading
import time
from typing import Optional

from . import _logs
from . import _protocol as proto
from ._config import Config
from ._ratelimit import LogLimiter
from ._route import Route
from ._stats import LocalCounters
from ._supervisor import Supervisor

_ANSWERS = (proto.ACK, proto.STATS)
_RECONNECT_POLL_S = 0.05


class Link:
    """This process's connection to the flusher, and what it counts of its own events.

    Invariants: ``buffer`` holds at most ``process_buffer_bytes`` of messages, in
    the order they were tracked, and is always drained before a new message
    is sent; ``generation`` is the newest flusher generation heard of.
    """

    def __init__(self, config: Config, supervisor: Supervisor, logger: _logs.AnyLogger) -> None:
        self.config = config
        self.supervisor = supervisor
        self.log = logger
        self.counters = LocalCounters()
        self.limiter = LogLimiter()  # every line about lost events goes through it
        self.sock: Optional[socket.socket] = None
        self.buffer: collections.deque[bytes] = collections.deque()
        self.buffer_bytes = 0
        self.generation = 0
        self.debug = False  # the client's logger was at DEBUG at the last check
        self._declared_level: Optional[int] = None  # what the flusher was told
        self._next_logging_check = 0.0  # monotonic seconds
        self._lost_since_flush = 0
        self._queued_before_connection = 0  # counters.queued when it was made
        self._confirmed = 0  # events of this connection the flusher confirmed settled
        self._unreported = 0  # of those, lost in the flusher and not told to a flush yet
        self._request_ids = itertools.count(1)
        self._lock = threading.RLock()
        self._route = proto.route(Route.of(config).to_bytes())  # first on each connection

    def connect_now(self) -> None:
        """Connect (starting the flusher if none runs) before the first event."""
        with self._lock:
            if self.sock is None:
                self._connect()

    def forget_parent(self) -> None:
        """In a forked child: drop the parent's connection, buffer, lock and counters.

        Closing the inherited descriptor leaves the parent's connection open;
        the child connects anew on its next call and never re-sends what the
        parent had buffered.
        """
        self.disconnect()
        self.buffer.clear()
        self.buffer_bytes = 0
        self.supervisor.forget_parent()
        self.counters = LocalCounters()
        self._lost_since_flush = 0
        self._queued_before_connection = self._confirmed = self._unreported = 0
        self._declared_level = None
        self._next_logging_check = 0.0
        self._lock = threading.RLock()  # a thread of the parent may have held it

    # -- counting: the one place this process counts events it did not hand over ----------
    def reject(self, reason: str) -> None:
        """Count an event refused at the call (invalid, client closed or disabled).

        The caller was told at once (a log line); ``flush()`` is not affected.
        """
        self.counters.dropped[reason] += 1

    def lose(self, reason: str, events: int = 1) -> None:
        """Count events that were accepted and then lost: the next ``flush()`` says False."""
        self.counters.dropped[reason] += events
        self._lost_since_flush += events

    def take_losses(self) -> int:
        """Events lost here since the last call (what the next ``flush()`` reports)."""
        lost, self._lost_since_flush = self._lost_since_flush, 0
        return lost

    # -- hot path ------------------------------------------------------------------------
    def send(self, message: bytes) -> None:
        """Hand ``message`` to the flusher without blocking; never raises.

        The common case (connected, nothing buffered) is one ``send(2)`` and
        takes no lock, so threads of one process do not contend. Anything else
        runs under a lock that ``track()`` only ever *tries*: a thread that
        finds it taken buffers its message instead of waiting.
        """
        sock = self.sock
        if sock is not None and not self.buffer:
            try:
                sock.send(message, proto.SEND_FLAGS)
                self.counters.queued += 1
                return
            except OSError:
                pass  # full, or the flusher is gone: the slow path sorts it out
        if not self._lock.acquire(blocking=False):
            self._hold(message)
            return
        try:
            self._send_slow(message)
        finally:
            self._lock.release()

    def _send_slow(self, message: bytes) -> None:
        for _attempt in range(2):  # a second time after reconnecting to a new flusher
            if not self._drain_nowait() or self.sock is None:
                break
            try:
                self.sock.send(message, proto.SEND_FLAGS)
                self.counters.queued += 1
                return
            except BlockingIOError:
                break
            except OSError as exc:
                self._lost(exc)
        self._hold(message)

    def _hold(self, message: bytes) -> None:
        if self.buffer_bytes + len(message) <= self.config.process_buffer_bytes:
            self.buffer.append(message)
            self.buffer_bytes += len(message)
        else:
            self.lose("buffer_full")
            self.limiter.log(
                self.log,
                logging.ERROR,
                "buffer_full",
                "an event was dropped: this process's buffer holds %d bytes (its bound) "
                "while the flusher takes nothing ('buffer_full')",
                self.buffer_bytes,
            )

    def _drain_nowait(self) -> bool:
        """Send buffered messages while the socket takes them; True once empty."""
        sock = self.sock or self._connect()
        while sock is not None and self.buffer:
            try:
                sock.send(self.buffer[0], proto.SEND_FLAGS)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._lost(exc)
                return False
            self.buffer_bytes -= len(self.buffer.popleft())
            self.counters.queued += 1
        return not self.buffer

    # -- logging: the level goes to the flusher, its records come back (see _logs) ---------
    def logging_check_due(self) -> bool:
        return time.monotonic() >= self._next_logging_check

    def check_logging(self, level: int) -> None:
        """Tell the flusher a changed level; replay the records it sent us. Never blocks."""
        self._next_logging_check = time.monotonic() + _logs.LEVEL_CHECK_S
        self.debug = level <= logging.DEBUG
        self.supervisor.reap()
        sock = self.sock
        if sock is None:
            return
        if level != self._declared_level:
            try:
                sock.send(proto.level(level), proto.SEND_FLAGS)
                self._declared_level = level
            except OSError:
                pass  # full or gone: told at a later check
        self.read_waiting()

    def read_waiting(self) -> None:
        """Take in what the flusher sent (records, confirmations); notice that it ended."""
        if self.sock is not None and not self._read_waiting(self.sock):
            self._ended()
            self.disconnect()

    def _read_waiting(self, sock: socket.socket) -> bool:
        """Handle every message waiting on ``sock``; False once the connection ended."""
        while True:
            try:
                message = sock.recv(proto.MAX_MESSAGE_BYTES, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except ConnectionResetError:
                continue  # reported once, before what the peer still sent us
            except OSError:
                return False
            if not message:
                return False
            try:
                self._heard(message)
            except proto.ProtocolError:
                pass  # a flusher of another version, say: nothing to act on

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> Optional[socket.socket]:
        sock = self.supervisor.connect()
        if sock is None:
            return None
        try:  # a new connection's send buffer is empty: this only fails if the flusher left
            sock.send(self._route, proto.SEND_FLAGS)
        except OSError:
            sock.close()
            return None
        self.sock = sock
        self._queued_before_connection = self.counters.queued
        self._confirmed = self._unreported = 0
        return sock

    def _lost(self, exc: OSError) -> None:
        why = exc.strerror or str(exc)
        self.limiter.log(
            self.log, logging.WARNING, "connection", "lost the connection to the flusher (%s)", why
        )
        if self.sock is not None:  # a hello, confirmations, a goodbye may still wait
            self._read_waiting(self.sock)
        self._ended()
        self.disconnect()

    def _ended(self) -> None:
        """The connection ended: count what the flusher had not confirmed as lost."""
        unconfirmed = self._sent_here() - self._confirmed
        self._lost_since_flush += self._unreported  # counted and logged by the flusher
        self._queued_before_connection = self.counters.queued
        self._confirmed = self._unreported = 0
        if unconfirmed > 0:
            self.lose("flusher_gone", unconfirmed)
            self.limiter.log(
                self.log,
                logging.ERROR,
                "flusher_gone",
                "the flusher ended before confirming %d events of this process: counted "
                "as lost ('flusher_gone'; it may have delivered some of them)",
                unconfirmed,
            )

    def _sent_here(self) -> int:
        """Events sent on the current connection."""
        return self.counters.queued - self._queued_before_connection

    def disconnect(self) -> None:
        """Close the connection (in a forked child: only the child's descriptor)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def _heard(self, message: bytes) -> proto.Reply:
        """Parse a message from the flusher, noting the generation a hello announces."""
        if not message:
            raise proto.ProtocolError("end of file")
        reply = proto.parse_reply(message)
        if reply.kind == proto.HELLO:
            self.generation = max(self.generation, proto.hello_generation(reply))
        elif reply.kind == proto.RECORD:
            _logs.replay(self.log, reply.body)
        elif reply.kind in (proto.CONFIRMED, proto.BYE):
            counts = proto.settled_counts(reply)
            if counts is not None:
                self._confirm(counts[0])
                self._unreported = counts[1]
        return reply

    def _confirm(self, events: int) -> None:
        self._confirmed = max(self._confirmed, min(events, self._sent_here()))

    # -- blocking requests: flush, stats, shutdown -------------------------------------------
    def drain(self, deadline: Optional[float]) -> bool:
        """Wait (until ``deadline``) for every buffered message to enter the queue."""
        with self._lock:
            return self._drain_until(deadline)

    def _drain_until(self, deadline: Optional[float]) -> bool:
        """Until ``deadline``: connected (a flusher started if needed), buffer empty."""
        while True:
            drained = self._drain_nowait()
            if self.sock is None:
                if not self._wait_restart(deadline):
                    return False
            elif drained:
                return True
            elif not _wait(self.sock, select.POLLOUT, deadline):
                return False

    def request(self, kind: bytes, deadline: Optional[float]) -> Optional[proto.Reply]:
        """Send a control request after all buffered events; its reply, or None."""
        with self._lock:
            for _attempt in range(2):  # again on a new connection if the flusher was replaced
                if not self._drain_until(deadline) or self.sock is None:
                    return None
                request_id = next(self._request_ids)
                sent_before = self._sent_here()
                try:
                    message = proto.request(kind, request_id)
                    if not _send_until(self.sock, message, deadline):
                        return None
                except OSError as exc:  # the request never reached a flusher
                    self._lost(exc)
                    continue
                answer = self._await_reply(request_id, deadline)
                if answer is not None and answer.kind == proto.ACK:
                    self._confirm(sent_before)  # settled, and its losses told in the answer
                    self._unreported = 0
                return answer
            return None

    def _await_reply(self, request_id: int, deadline: Optional[float]) -> Optional[proto.Reply]:
        assert self.sock is not None
        while _wait(self.sock, select.POLLIN, deadline):
            try:
                reply = self._heard(self.sock.recv(proto.MAX_MESSAGE_BYTES))
            except BlockingIOError:
                continue
            except (OSError, proto.ProtocolError):  # reset or end: the flusher died
                self.read_waiting()  # a goodbye after the reset, then the end
                if self.sock is not None:
                    self._ended()
                    self.disconnect()
                return None
            if reply.kind in _ANSWERS and reply.request_id == request_id:
                return reply
        return None  # timed out; a late reply is skipped by its request id

    def _wait_restart(self, deadline: Optional[float]) -> bool:
        while self._connect() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_RECONNECT_POLL_S)
        return True


def _send_until(sock: socket.socket, message: bytes, deadline: Optional[float]) -> bool:
    """Send ``message`` whole, waiting for room until ``deadline``; False if it passed."""
    while True:
        try:
            sock.send(message, proto.SEND_FLAGS)
            return True
        except BlockingIOError:
            if not _wait(sock, select.POLLOUT, deadline):
                return False


def _wait(sock: socket.socket, event: int, deadline: Optional[float]) -> bool:
    """Poll ``sock`` for ``event`` until ``deadline`` (monotonic; None: no limit)."""
    poller = select.poll()
    poller.register(sock, event | select.POLLHUP)
    while True:
        timeout_ms = None if deadline is None else (deadline - time.monotonic()) * 1000
        if timeout_ms is not None and timeout_ms <= 0:
            return False
        if poller.poll(timeout_ms):
            return True
