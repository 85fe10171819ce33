"""The flusher process: reads every process's events, batches them, posts them.

::

    owner process (made the client)        forked / spawned workers
    +--------------------------+           +----------------+  +----------------+
    | Trubrics  (no threads)   |           | Trubrics       |  | Trubrics       |
    |  track() -> 1 message    |           |  (re-initialised after fork)      |
    +------------+-------------+           +-------+--------+  +-------+--------+
                 | own connection                  |                   |
                 v                                 v                   v
         ====== AF_UNIX SOCK_SEQPACKET, abstract address, one connection each ======
                                           |
    flusher process (fresh interpreter, started with subprocess by the owner)
    +--------------------------------------v-----------------------------------+
    | main thread: selector loop                                               |
    |   listener -> accept (uid checked)   connections -> Batcher (per endpoint)|
    |   pidfd(owner) -> drain and exit     flush/stats/shutdown -> replies      |
    |        |  full or old batches                     ^ (batch, outcome)     |
    |        v                                          |  + wake pipe         |
    |   Dispatcher (ready deque, pause gate) --> sender threads x N            |
    |                                            requests.Session keep-alive   |
    +----------------------------------------------------|---------------------+
                                                         v
                                         POST {host}/publish_events
                                         POST {host}/publish_llm_events

Lifetime: the flusher exits after a ``Q`` (shutdown) request from the owner,
once the owner process is gone (watched through a pidfd), or
``shutdown_timeout`` after a SIGTERM; each time it first delivers what it
holds, within ``shutdown_timeout``. SIGINT is ignored: Ctrl-C reaches the
whole process group, and the owner's exit handler still needs the flusher.
What it holds in memory is lost if the flusher itself is SIGKILLed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import random
import selectors
import signal
import socket
import sys
import time
from typing import Any, Optional

from . import _protocol as proto
from ._batching import Batch, Batcher
from ._config import EVENTS_ENDPOINT, LLM_EVENTS_ENDPOINT, Config
from ._process import drain_pipe, pid_alive, watch_exit
from ._retry import decide
from ._sender import Dispatcher, Result, Sender
from ._stats import FlusherCounters

_ENDPOINTS = {proto.EVENT[0]: EVENTS_ENDPOINT, proto.LLM_EVENT[0]: LLM_EVENTS_ENDPOINT}
_READS_PER_WAKE = 512
_READ_ALL_LIMIT = 100_000  # per connection: a busy producer cannot keep us reading forever
_OWNER_POLL_S = 0.5


@dataclasses.dataclass
class _Conn:
    sock: socket.socket
    pid: int
    dropped: int = 0


@dataclasses.dataclass
class _Waiter:
    """A ``flush()`` (or shutdown) waiting for the batches it covers to settle."""

    conn: _Conn
    request_id: int
    batch_ids: set[int]
    ok: bool
    shutdown: bool = False


class Flusher:
    def __init__(
        self,
        config: Config,
        listener: socket.socket,
        owner_pid: int,
        generation: int,
        exec_watch_fd: Optional[int] = None,
    ) -> None:
        self.config = config
        self.log = logging.getLogger(config.logger_name)
        self.listener: Optional[socket.socket] = listener
        self.owner_pid = owner_pid
        self.counters = FlusherCounters(pid=os.getpid(), generation=generation)
        self.batcher = Batcher(config.flush_at, config.flush_interval_s)
        self.unsettled: dict[int, Batch] = {}
        self.waiters: list[_Waiter] = []
        self.selector = selectors.DefaultSelector()
        self.results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        self.dispatcher = Dispatcher(time.monotonic)
        self.sender = Sender(config, self.dispatcher, self.results, self._wake, self.log)
        self.buffer = bytearray(proto.MAX_MESSAGE_BYTES)
        self.stop_at: Optional[float] = None  # set when the end has begun
        self.term_at: Optional[float] = None  # SIGTERM received: end begins then
        self.owner_fd = watch_exit(owner_pid)
        self.exec_watch_fd = exec_watch_fd
        self.owner_gone = False
        self.owner_checked_at = 0.0
        self._warned: set[str] = set()
        self.held = 0  # events taken in and not yet delivered or dropped
        self._reading_all = False

    # -- set-up and main loop ------------------------------------------------
    def run(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        assert self.listener is not None
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        if self.owner_fd is not None:
            self.selector.register(self.owner_fd, selectors.EVENT_READ, "owner")
        if self.exec_watch_fd is not None:
            self.selector.register(self.exec_watch_fd, selectors.EVENT_READ, "exec")
        self.sender.start()
        self.log.debug("flusher %d started for owner %d", os.getpid(), self.owner_pid)
        try:
            while not self._finished():
                self._step()
        finally:
            self._exit()

    def _step(self) -> None:
        for key, _ in self.selector.select(self._select_timeout()):
            if key.data == "accept":
                self._accept()
            elif key.data == "wake":
                drain_pipe(self.wake_r)
            elif key.data == "owner":
                self._begin_end("owner process exited")
            elif key.data == "exec":  # end of file: nobody writes to this pipe
                self.selector.unregister(key.fd)
                self._begin_end("the owner replaced its program (exec)")
            else:
                self._read(key.data)
        self._settle_results()
        now = time.monotonic()
        ending = self.stop_at is not None  # no more waiting to fill batches
        for batch in self.batcher.cut_all() if ending else self.batcher.due(now):
            self._dispatch(batch)
        self._watch_owner(now)

    def _select_timeout(self) -> float:
        candidates = (self.batcher.next_due_at(), self.stop_at, self.term_at)
        deadlines = [d for d in candidates if d is not None]
        if self.owner_fd is None and not self.owner_gone:
            deadlines.append(self.owner_checked_at + _OWNER_POLL_S)
        if not deadlines:
            return 3600.0
        return max(0.0, min(deadlines) - time.monotonic())

    def _finished(self) -> bool:
        if self.stop_at is None:
            return False
        return not self.unsettled or time.monotonic() >= self.stop_at

    # -- reading the shared queue ----------------------------------------------
    def _accept(self) -> None:
        while self.listener is not None:  # None once the end has begun
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            pid, uid = proto.peer_pid_uid(sock)
            if uid != os.getuid():
                self.log.error("refused a connection from uid %d (pid %d)", uid, pid)
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, pid)
            self.selector.register(sock, selectors.EVENT_READ, conn)
            self.counters.connections += 1

    def _read(self, conn: _Conn, limit: int = _READS_PER_WAKE) -> None:
        view = memoryview(self.buffer)
        for _ in range(limit):
            try:
                size = conn.sock.recv_into(self.buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            if size == 0:
                self._close_conn(conn)
                return
            self._handle(conn, view[0], bytes(view[1:size]))

    def _handle(self, conn: _Conn, kind: int, payload: bytes) -> None:
        endpoint = _ENDPOINTS.get(kind)
        if endpoint is not None:
            self._add_event(conn, endpoint, payload)
        elif kind == proto.FLUSH[0]:
            self._flush_request(conn, payload, shutdown=False)
        elif kind == proto.SHUTDOWN[0]:
            self._flush_request(conn, payload, shutdown=True)
        elif kind == proto.STATS[0]:
            request_id = proto.parse_request_id(payload)
            body = json.dumps(self.counters.snapshot(self.held)).encode()
            _reply(conn, proto.stats_reply(request_id, body))
        else:
            self.log.error("ignored a message of unknown kind %r from pid %d", kind, conn.pid)

    def _add_event(self, conn: _Conn, endpoint: str, payload: bytes) -> None:
        self.counters.count_received(conn.pid)
        if self.held >= self.config.max_queue_size:
            conn.dropped += 1
            self.counters.drop("queue_full", 1)
            self._warn_once(
                "queue_full",
                f"queue full ({self.config.max_queue_size} events held): dropping new events",
            )
            return
        self.held += 1
        batch = self.batcher.add(endpoint, payload, time.monotonic())
        if batch is not None:
            self._dispatch(batch)

    def _read_all(self) -> None:
        """Take in every message already waiting, on every connection (and backlog)."""
        if self._reading_all:
            return  # a flush request met while reading: the outer call goes on
        self._reading_all = True
        try:
            if self.listener is not None:
                self._accept()
            for key in list(self.selector.get_map().values()):
                if isinstance(key.data, _Conn) and key.data.sock.fileno() != -1:
                    self._read(key.data, limit=_READ_ALL_LIMIT)
        finally:
            self._reading_all = False

    def _close_conn(self, conn: _Conn) -> None:
        if conn.sock.fileno() == -1:
            return  # closed already, during an outer read
        self.selector.unregister(conn.sock)
        conn.sock.close()
        self.counters.connections -= 1

    # -- flush, shutdown and stop ------------------------------------------------
    def _flush_request(self, conn: _Conn, payload: bytes, shutdown: bool) -> None:
        self._read_all()  # events other processes queued before: they leave now too
        for batch in self.batcher.cut_all():
            self._dispatch(batch)
        request_id = proto.parse_request_id(payload)
        waiter = _Waiter(conn, request_id, set(self.unsettled), conn.dropped == 0, shutdown)
        conn.dropped = 0
        self.waiters.append(waiter)
        self._answer_waiters()

    def _answer_waiters(self) -> None:
        for waiter in [w for w in self.waiters if not w.batch_ids]:
            self.waiters.remove(waiter)
            _reply(waiter.conn, proto.ack(waiter.request_id, waiter.ok))
            if waiter.shutdown:
                self._begin_end("shutdown requested by the owner")

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.term_at is None:
            self.term_at = time.monotonic() + self.config.shutdown_timeout_s
            self.log.debug("SIGTERM: leaving within %.1f s", self.config.shutdown_timeout_s)

    def _watch_owner(self, now: float) -> None:
        if self.term_at is not None and now >= self.term_at:
            self._begin_end("SIGTERM")
        if self.owner_fd is not None or self.owner_gone:
            return
        if now - self.owner_checked_at < _OWNER_POLL_S:
            return
        self.owner_checked_at = now
        if not pid_alive(self.owner_pid):
            self._begin_end("owner process exited")

    def _begin_end(self, why: str) -> None:
        """Stop listening, take in what is already queued, then deliver it all."""
        self._read_all()
        if self.listener is not None:
            self.log.debug("flusher %d ending: %s", os.getpid(), why)
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
        if self.owner_fd is not None:
            self.selector.unregister(self.owner_fd)
            os.close(self.owner_fd)
            self.owner_fd = None
        self.owner_gone = True  # nothing more to watch
        for batch in self.batcher.cut_all():
            self._dispatch(batch)
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        self.stop_at = deadline if self.stop_at is None else min(self.stop_at, deadline)

    def _exit(self) -> None:
        lost = self.held
        if lost:
            self.counters.drop("shutdown_timeout", lost)
            self.log.error("exiting with %d undelivered events (shutdown timeout)", lost)
        self.sender.stop(timeout_s=1.0)
        self.log.debug("flusher %d exits: %s", os.getpid(), self.counters.snapshot(0))

    # -- delivery ------------------------------------------------------------------
    def _dispatch(self, batch: Batch) -> None:
        self.unsettled[batch.id] = batch
        self.dispatcher.put(batch)

    def _settle_results(self) -> None:
        while True:
            try:
                batch, outcome = self.results.get_nowait()
            except queue.Empty:
                break
            batch.attempts += 1
            self.counters.requests += 1
            decision = decide(
                outcome,
                batch.attempts,
                self.config.max_retries,
                time.monotonic(),
                time.time(),
                random.random(),
            )
            if decision.action == "retry":
                self.counters.retried_requests += 1
                self._log_retry(batch, outcome.status, outcome.detail, decision.retry_at)
                self.dispatcher.put_retry(batch, decision.retry_at)
                continue
            if decision.action == "delivered":
                self.counters.delivered += len(batch)
            else:
                self._log_drop(batch, decision.reason, outcome.status, outcome.detail)
            self._settled(batch, ok=decision.action == "delivered")
        self._answer_waiters()

    def _settled(self, batch: Batch, ok: bool) -> None:
        del self.unsettled[batch.id]
        self.held -= len(batch)
        for waiter in self.waiters:
            if batch.id in waiter.batch_ids:
                waiter.batch_ids.discard(batch.id)
                waiter.ok = waiter.ok and ok

    def _log_retry(self, batch: Batch, status: Optional[int], detail: str, at: float) -> None:
        self.log.warning(
            "POST /%s failed (%s): retry %d of %d for %d events in %.1f s",
            batch.endpoint,
            f"HTTP {status}" if status else detail,
            batch.attempts,
            self.config.max_retries,
            len(batch),
            max(0.0, at - time.monotonic()),
        )

    def _log_drop(self, batch: Batch, reason: str, status: Optional[int], detail: str) -> None:
        self.counters.failed_batches += 1
        self.counters.drop(reason, len(batch))
        if reason == "unauthorized":
            self._warn_once(reason, f"the API key was rejected (HTTP {status}): {detail}")
        what = f"HTTP {status}: {detail}" if status else detail
        self.log.error(
            "dropped %d events for /%s (%s): %s", len(batch), batch.endpoint, reason, what
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.error("%s", message)

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass  # already awake


def _reply(conn: _Conn, message: bytes) -> None:
    try:
        conn.sock.send(message, proto.SEND_FLAGS)
    except OSError:
        pass  # the process that asked is gone or not reading: nothing to tell


def _setup_logging(config: Config) -> None:
    logger = logging.getLogger(config.logger_name)
    logger.setLevel(config.log_level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(name)s %(levelname)s [flusher %(process)d] %(message)s")
    )
    logger.addHandler(handler)
    logger.propagate = False


def main(boot: dict[str, Any]) -> None:
    """Entry point of the flusher interpreter (see ``_spawn.BOOTSTRAP``)."""
    config = Config.from_wire(boot["config"])
    _setup_logging(config)
    listener = socket.socket(fileno=boot["listener_fd"])
    watch = boot.get("exec_watch_fd")
    Flusher(config, listener, boot["owner_pid"], boot["generation"], watch).run()
