"""One process's end of the shared queue: its connection, its small buffer, restarts.

``send`` is on the path of every ``track()``: one non-blocking ``send(2)``
of one message, no lock, no thread. When the socket is full the message
waits in a bounded per-process buffer (drained first on the next call);
when that is full too it is dropped and counted. A broken connection means
the flusher died: the first process to notice starts a new one on the same
address (binding it is the lock), unless the owner process is gone.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import select
import socket
import subprocess
import threading
import time
from typing import Optional

from . import _protocol as proto
from ._config import Config
from ._process import pid_alive
from ._spawn import FlusherStartError, start_flusher
from ._stats import LocalCounters

_RESTART_PAUSE_S = 1.0
_NO_LISTENER = (errno.ECONNREFUSED, errno.ENOENT)


class Link:
    def __init__(
        self, config: Config, address: bytes, owner_pid: int, logger: logging.Logger
    ) -> None:
        self.config = config
        self.address = address
        self.owner_pid = owner_pid
        self.log = logger
        self.counters = LocalCounters()
        self.sock: Optional[socket.socket] = None
        self.buffer: collections.deque[bytes] = collections.deque()
        self.started: Optional[subprocess.Popen[bytes]] = None
        self.exec_watch: Optional[int] = None  # owner: write end the flusher watches
        self.next_restart_at = 0.0
        self.lost_since_flush = 0  # dropped here since the last flush() asked
        self._request_ids = itertools.count(1)
        self._lock = threading.RLock()

    def forget_parent(self) -> None:
        """In a forked child: drop the parent's connection, buffer, lock and counters.

        Closing the inherited descriptor leaves the parent's connection open;
        the child connects anew on its next call and never re-sends what the
        parent had buffered.
        """
        self.disconnect()
        self.buffer.clear()
        self.started = None
        self.counters = LocalCounters()
        self.lost_since_flush = 0
        self._lock = threading.RLock()  # a thread of the parent may have held it

    # -- hot path ------------------------------------------------------------------
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
        if len(self.buffer) < self.config.process_buffer_size:
            self.buffer.append(message)
        else:
            self.counters.dropped["buffer_full"] += 1
            self.lost_since_flush += 1

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
            self.buffer.popleft()
            self.counters.queued += 1
        return not self.buffer

    # -- connection and restarts -----------------------------------------------------
    def _connect(self) -> Optional[socket.socket]:
        try:
            self.sock = proto.connect(self.address)
        except OSError as exc:
            if exc.errno not in _NO_LISTENER or not self._restart():
                return None
            try:
                self.sock = proto.connect(self.address)
            except OSError:
                return None
        return self.sock

    def _lost(self, exc: OSError) -> None:
        self.log.warning("lost the connection to the flusher (%s)", exc.strerror or exc)
        self.disconnect()

    def disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def start(self, generation: int) -> None:
        """Start a flusher on our address (the owner's first start, or a restart)."""
        self._reap()
        watch_r = None
        if os.getpid() == self.owner_pid:  # only the owner's program can be replaced
            self.close_exec_watch()
            watch_r, self.exec_watch = os.pipe()  # both ends close on exec
        try:
            self.started = start_flusher(
                self.config, self.address, self.owner_pid, generation, watch_r
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # in use: another process restarted it
                raise
        finally:
            if watch_r is not None:
                os.close(watch_r)

    def close_exec_watch(self) -> None:
        if self.exec_watch is not None:
            os.close(self.exec_watch)
            self.exec_watch = None

    def _restart(self) -> bool:
        now = time.monotonic()
        if now < self.next_restart_at or not pid_alive(self.owner_pid):
            return False
        self.next_restart_at = now + _RESTART_PAUSE_S
        try:
            self.start(generation=self.counters.flusher_restarts + 1)
        except (OSError, FlusherStartError) as exc:
            self.log.error("the flusher is gone and could not be restarted: %s", exc)
            return False
        self.counters.flusher_restarts += 1
        self.log.warning("the flusher was gone: started a new one")
        return True

    def _reap(self) -> None:
        if self.started is not None and self.started.poll() is not None:
            self.started = None

    # -- blocking requests: flush, stats, shutdown ------------------------------------
    def drain(self, deadline: Optional[float]) -> bool:
        """Wait (until ``deadline``) for every buffered message to enter the queue."""
        with self._lock:
            return self._drain_until(deadline)

    def _drain_until(self, deadline: Optional[float]) -> bool:
        while not self._drain_nowait():
            if self.sock is None and not self._wait_restart(deadline):
                return False
            if self.sock is not None and not _wait(self.sock, select.POLLOUT, deadline):
                return False
        return True

    def request(self, kind: bytes, deadline: Optional[float]) -> Optional[bytes]:
        """Send a control request after all buffered events; its reply payload or None."""
        with self._lock:
            return self._request(kind, deadline)

    def _request(self, kind: bytes, deadline: Optional[float]) -> Optional[bytes]:
        for _attempt in range(2):  # again on a new connection if the flusher was replaced
            if not self._drain_until(deadline) or self.sock is None:
                return None
            request_id = next(self._request_ids)
            message = proto.request(kind, request_id)
            try:
                while not _try_send(self.sock, message):
                    if not _wait(self.sock, select.POLLOUT, deadline):
                        return None
            except OSError as exc:  # the request never reached a flusher
                self._lost(exc)
                continue
            return self._await_reply(request_id, deadline)
        return None

    def _await_reply(self, request_id: int, deadline: Optional[float]) -> Optional[bytes]:
        assert self.sock is not None
        while _wait(self.sock, select.POLLIN, deadline):
            try:
                reply = self.sock.recv(proto.MAX_MESSAGE_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                reply = b""  # reset: the flusher died while we waited
            if not reply:
                self.disconnect()
                return None
            if proto.parse_request_id(reply[1:]) == request_id:
                return reply[1:]
        return None  # timed out; a late reply is skipped by its request id

    def _wait_restart(self, deadline: Optional[float]) -> bool:
        while self._connect() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if not pid_alive(self.owner_pid):
                return False
            time.sleep(0.05)
        return True

    def wait_flusher_exit(self, deadline: Optional[float]) -> None:
        """After a shutdown request: reap the flusher we started, killing it if overdue."""
        process, self.started = self.started, None
        if process is None:
            return
        try:
            process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.log.error("the flusher did not exit in time: killing it")
            process.kill()
            process.wait()


def _try_send(sock: socket.socket, message: bytes) -> bool:
    try:
        sock.send(message, proto.SEND_FLAGS)
    except BlockingIOError:
        return False
    return True


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
