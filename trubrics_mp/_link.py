"""One process's end of the shared queue: its connection, its small buffer, its counters.

``send`` is on the path of every ``track()``: one non-blocking ``write(2)``
of one record to the connection's pipe (see ``_pipe``), no lock, no thread.
An event too large for the pipe, or one that finds it full, goes on the
socket (one ``send(2)``). When the socket is full too, the message waits in
a bounded per-process buffer (drained first on the next call); when that is
full too it is dropped and counted. A broken connection means
the flusher died or left: the first process to notice has its
:class:`Supervisor` start a new one on the same path.

What a dead flusher took with it is counted here, as ``flusher_gone``: the
events sent on the connection that the flusher had not confirmed settled
(its ``K``, ``B`` and flush answers, see ``_protocol``). That is an upper
bound: the flusher may have delivered some of them just before it died,
unconfirmed. A process that tracks reads confirmations at its periodic
check (every ``_logs.LEVEL_CHECK_S``), so they lag by about a batch's
delivery time.

With a spool, the process keeps what it sent on a connection until the
flusher confirms it on disk (``_resend.Unconfirmed``; then every send takes
the lock, to number each lane in the order of its writes), and sends it
again on the next connection if the flusher dies: nothing is lost with it.
"""

from __future__ import annotations

import collections
import io
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
from ._pipe import RECORD_MAX_BYTES, EventPipe
from ._ratelimit import LogLimiter
from ._resend import Unconfirmed, new_token
from ._route import Route
from ._stats import LocalCounters
from ._supervisor import Supervisor

_ANSWERS = (proto.ACK, proto.STATS)
_RECONNECT_POLL_S = 0.05
UNCONFIRMED_MAX_BYTES = 8 * 1024 * 1024  # kept to send again: a full pipe, socket and more


class Link:
    """This process's connection to the flusher, and what it counts of its own events.

    Invariants: ``buffer`` holds at most ``process_buffer_bytes`` of messages
    (plus what was taken back from a pipe), in the order they were tracked, and
    is always drained before a new message is sent; ``generation`` is the
    newest flusher generation heard of.
    """

    def __init__(self, config: Config, supervisor: Supervisor, logger: _logs.AnyLogger) -> None:
        self.config = config
        self.supervisor = supervisor
        self.log = logger
        self.counters = LocalCounters()
        self.limiter = LogLimiter()  # every line about lost events goes through it
        self.sock: Optional[socket.socket] = None
        self.pipe: Optional[EventPipe] = None  # the connection's pipe (None: socket only)
        self.writer: Optional[io.FileIO] = None  # its write end: the hot path
        self._retired: Optional[EventPipe] = None  # an ended connection's, read once more
        self.buffer: collections.deque[bytes] = collections.deque()
        self.buffer_bytes = 0
        self.generation = 0
        self.debug = False  # the client's logger was at DEBUG at the last check
        self._declared_level: Optional[int] = None  # what the flusher was told
        self.next_logging_check = 0.0  # monotonic seconds
        self._lost_since_flush = 0
        self._queued_before_connection = 0  # counters.queued when it was made
        self._confirmed = 0  # events of this connection the flusher confirmed settled
        self._unreported = 0  # of those, lost in the flusher and not told to a flush yet
        self._request_ids = itertools.count(1)
        self._lock = threading.RLock()
        self._route = Route.of(config).to_bytes()  # first on each connection, with a token
        self.unconfirmed: Optional[Unconfirmed] = None  # with a spool: kept to send again
        self._keeping = bool(config.spool_dir)  # then every send takes the lock

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
        if self._retired is not None:
            self._retired.close()  # the child's copies: what is in it is the parent's
            self._retired = None
        self.buffer.clear()
        self.buffer_bytes = 0
        self.supervisor.forget_parent()
        self.counters = LocalCounters()
        self._lost_since_flush = 0
        self._queued_before_connection = self._confirmed = self._unreported = 0
        self._declared_level = None
        self.next_logging_check = 0.0
        self.unconfirmed = None
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

        The common case (connected, nothing buffered, no spool) is one
        ``write(2)`` to the pipe, or one ``send(2)``, and takes no lock, so
        threads of one process do not contend. Anything else runs under a lock
        that ``track()`` only ever *tries*: a thread that finds it taken
        buffers its message instead of waiting.
        """
        sock = self.sock
        if sock is not None and not self.buffer:
            if not self._keeping:
                try:
                    self._hand_over(sock, message)
                    self.counters.queued += 1
                    return
                except OSError:
                    pass  # full, or the flusher is gone: the slow path sorts it out
            elif self._lock.acquire(blocking=False):
                try:
                    self._send_kept(sock, message)
                finally:
                    self._lock.release()
                return
        if not self._lock.acquire(blocking=False):
            self._hold(message)
            return
        try:
            self._send_slow(message)
        finally:
            self._lock.release()

    def _send_kept(self, sock: socket.socket, message: bytes) -> None:
        """With a spool, under the lock: hand ``message`` over and keep it, else the
        slow path."""
        kept = self.unconfirmed
        if kept is not None and sock is self.sock and not self.buffer:
            try:
                kept.sent(self._hand_over(sock, message), message)
                self.counters.queued += 1
                return
            except OSError:
                pass
        self._send_slow(message)

    def _send_slow(self, message: bytes) -> None:
        for _attempt in range(2):  # a second time after reconnecting to a new flusher
            if not self._drain_nowait() or self.sock is None:
                break
            try:
                self._sent(self._hand_over(self.sock, message), message)
                return
            except BlockingIOError:
                break
            except OSError as exc:
                self._lost(exc)
        self._hold(message)

    def _hand_over(self, sock: socket.socket, message: bytes) -> int:
        """Put one message into the pipe, else on ``sock``; the lane it took.
        Raises what ``send(2)`` raises.

        Order is kept within the pipe and within the socket, not across them:
        an event that found the pipe full may reach the flusher after later ones.
        """
        writer = self.writer
        if writer is not None and len(message) <= RECORD_MAX_BYTES:
            try:
                if writer.write(message) is not None or self._grown(message):
                    return proto.PIPE
            except (OSError, ValueError):  # closed by another thread meanwhile
                pass
        sock.send(message, proto.SEND_FLAGS)
        return proto.SOCKET

    def _sent(self, lane: int, message: bytes) -> None:
        """``message`` went into ``lane`` (under the lock)."""
        self.counters.queued += 1
        if self.unconfirmed is not None:
            self.unconfirmed.sent(lane, message)

    def _grown(self, message: bytes) -> bool:
        """The pipe was full: grow it once (see ``EventPipe.grow``), and write again."""
        pipe = self.pipe
        return pipe is not None and pipe.grow() and pipe.writer.write(message) is not None

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
                lane = self._hand_over(sock, self.buffer[0])
            except BlockingIOError:
                return False
            except OSError as exc:
                self._lost(exc)
                return False
            message = self.buffer.popleft()
            self.buffer_bytes -= len(message)
            self._sent(lane, message)
        return not self.buffer

    # -- logging: the level goes to the flusher, its records come back (see _logs) ---------
    def check_logging(self, level: int) -> None:
        """Tell the flusher a changed level; replay the records it sent us. Never blocks."""
        self.next_logging_check = time.monotonic() + _logs.LEVEL_CHECK_S
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
        if self._lock.acquire(blocking=False):  # else another thread is in a slow path
            try:
                self.read_waiting()
            finally:
                self._lock.release()

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
        self._take_back_retired()
        sock = self.supervisor.connect()
        if sock is None:
            return None
        pipe = EventPipe.open()
        token = new_token()
        route = proto.route(token, self._route)
        try:  # a new connection's send buffer is empty: this only fails if the flusher left
            if pipe is None:
                sock.send(route, proto.SEND_FLAGS)
            else:  # the flusher gets the pipe's read end with the route
                socket.send_fds(sock, [route], [pipe.read_fd], proto.SEND_FLAGS)
        except OSError:
            sock.close()
            if pipe is not None:
                pipe.close()
            return None
        self.sock, self.pipe = sock, pipe
        self.writer = None if pipe is None else pipe.writer
        self._queued_before_connection = self.counters.queued
        self._confirmed = self._unreported = 0
        if self.config.spool_dir:  # until its hello says the flusher has no spool
            self.unconfirmed = Unconfirmed(token, UNCONFIRMED_MAX_BYTES)
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
        """The connection ended: take back what is left in the pipe, and (with a
        spool) what the flusher had not confirmed on disk; count the rest of
        what it had not confirmed as lost."""
        self._take_back_pipe()
        kept, self.unconfirmed = self.unconfirmed, None
        if kept is not None:
            resends = kept.resends()
            self.counters.resent += len(resends)
            self._requeue(resends, 0)
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

    def _take_back_pipe(self) -> None:
        """Take back the records the flusher left in the pipe (it reads it no more).

        Its read end is kept until the next connection, which takes back once
        more: another thread's ``write(2)`` may still have been under way.
        """
        pipe, self.pipe, self.writer = self.pipe, None, None
        if pipe is None:
            return
        pipe.writer.close()
        records, spoiled = pipe.take_back()
        if self.unconfirmed is not None:
            self.unconfirmed.taken_back(len(records) + spoiled)
        self._requeue(records, spoiled)
        if self._retired is not None:
            self._retired.close()
        self._retired = pipe

    def _take_back_retired(self) -> None:
        retired, self._retired = self._retired, None
        if retired is not None:
            self._requeue(*retired.take_back())
            retired.close()

    def _requeue(self, records: list[bytes], spoiled: int) -> None:
        """Put records taken back from a pipe at the head of the buffer, unsent again.

        They may take the buffer past its bound (by at most what a pipe holds).
        """
        self.buffer.extendleft(reversed(records))
        self.buffer_bytes += sum(map(len, records))
        self.counters.queued -= len(records) + spoiled
        if spoiled:
            self.lose("flusher_gone", spoiled)

    def _sent_here(self) -> int:
        """Events sent on the current connection."""
        return self.counters.queued - self._queued_before_connection

    def disconnect(self) -> None:
        """Close the connection (in a forked child: only the child's descriptors).

        What is still in the pipe stays for the flusher, which reads it to the
        end once it sees the connection close.
        """
        sock, self.sock = self.sock, None
        pipe, self.pipe, self.writer = self.pipe, None, None
        self.unconfirmed = None
        if sock is not None:
            sock.close()
        if pipe is not None:
            pipe.close()

    def _heard(self, message: bytes) -> proto.Reply:
        """Parse a message from the flusher, noting the generation a hello announces."""
        if not message:
            raise proto.ProtocolError("end of file")
        reply = proto.parse_reply(message)
        if reply.kind == proto.HELLO:
            self.generation = max(self.generation, proto.hello_generation(reply))
            if not proto.hello_spool(reply):  # nothing on disk to confirm: nothing to resend
                self.unconfirmed = None
        elif reply.kind == proto.RECORD:
            _logs.replay(self.log, reply.body)
        elif reply.kind in (proto.CONFIRMED, proto.BYE):
            counts = proto.settled_counts(reply)
            if counts is not None:
                self._confirm(counts[0])
                self._unreported = counts[1]
                self._confirm_lanes(reply.kind, counts[2])
        return reply

    def _confirm_lanes(self, kind: bytes, lanes: proto.Lanes) -> None:
        """What is on disk per lane need not be sent again. A ``K`` that does not
        say (the spool refused some of our events), or a goodbye that does not,
        ends sending again on this connection: from then on the flusher
        confirms only what is settled, and counts what it loses itself."""
        if self.unconfirmed is None:
            return
        if lanes is not None:
            self.unconfirmed.on_disk(lanes)
        else:
            self.unconfirmed = None

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
        """Send a control request after all buffered events; its reply, or None.

        A flusher that ends before answering (its connection closes, with what
        it had not confirmed counted as lost) is asked again on the next
        connection, once: a flusher killed while idle, whose threads were
        still exiting when the request went out, costs no failed flush.
        """
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
                if answer is None and self.sock is None:
                    continue  # the flusher ended before answering (counted): ask the next
                if answer is not None and answer.kind == proto.ACK:
                    self._confirm(sent_before)  # settled, and its losses told in the answer
                    self._unreported = 0
                    if self.unconfirmed is not None:  # sends wait for the lock we hold
                        self.unconfirmed.settled()
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
