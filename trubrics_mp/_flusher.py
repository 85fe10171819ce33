"""The flusher process: reads every process's events, batches them, posts them.

::

    any process of the user that made a client (the same pipeline and settings)
    +----------------+  +----------------+  +----------------+
    | Trubrics       |  | Trubrics       |  | Trubrics       |   forked, spawned, or
    |  track() -> 1 message per event    |  | (no threads)   |   started on their own
    +-------+--------+  +-------+--------+  +-------+--------+
            | own connection    |                   |
            v                   v                   v
      === AF_UNIX SOCK_SEQPACKET, <runtime dir>/<pipeline>-<digest>.sock (0700 dir) ===
                                           |
    flusher process (fresh interpreter in a session of its own, child of init)
    +--------------------------------------v-----------------------------------+
    | main thread: one selector loop over five roles                           |
    |   Reader    listener + connections -> messages                           |
    |   Intake    batches per endpoint, the bound on events held               |
    |   Durable   the disk spool, if set: append, ack, replay --> spool dir    |
    |   Answers   flush() requests, confirmations (Waiters: batches covered)   |
    |   Lifetime  SIGTERM, connections open -> phase, deadline                 |
    |        | batches                                   ^ settled outcomes    |
    |        v                                           |  + wake pipe        |
    |   Delivery: ready line, pause gate, retries --> sender threads x N       |
    |                                        Poster (HTTP/1.1 keep-alive)      |
    +----------------------------------------------------|---------------------+
                                                         v
                                         POST {host}/publish_events
                                         POST {host}/publish_llm_events

Lifetime: the flusher belongs to no process. It serves while any process is
connected; once none has been for ``linger`` seconds it sends all it holds
(retrying as its policy says) and leaves when nothing is left. After a
SIGTERM it serves on for ``shutdown_timeout``, then delivers what it holds
within ``shutdown_timeout`` more. SIGINT is ignored. As it stops listening
it removes its socket (under the start lock, and only if the path is still
its own), so the next process to make a client starts a new flusher. What it
holds in memory is lost if the flusher itself is SIGKILLed (each process
counts its unconfirmed events, see ``_link``), unless a disk spool is set
(``_durable``): then what it held stays on disk for the next flusher.
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import signal
import socket
import time
from typing import Any, Callable, Optional

from . import _address, _logs
from . import _protocol as proto
from ._answers import Answers
from ._batching import Batch, Intake
from ._config import Config
from ._delivery import Delivery, Settled, scaled
from ._durable import Durable, Spilled
from ._http import HttpPoster, Poster
from ._lifetime import Lifetime
from ._logs import ForwardingHandler
from ._losses import LossBook
from ._messages import ENDPOINTS, Messages
from ._pipe import NAP_S, QUIET_POLLS
from ._process import FLUSHER_COMM, drain_pipe, set_name
from ._reader import Conn, PipeOf, Reader, reply
from ._redact import RedactingFilter, Secrets
from ._route import Route
from ._spool import Pending
from ._stats import FlusherCounters
from ._waiters import Waiters

READS_PER_WAKE = 512  # per connection and wake-up: one busy producer cannot starve others
READ_ALL_LIMIT = 100_000  # per connection, for flush and the end
SENDER_JOIN_S = 1.0


class Flusher(Messages):
    """The main loop; each job is one role's (see the module diagram).

    ``poster`` defaults to the real HTTP poster; tests pass a fake one and run
    :meth:`serve` in a thread against a listener of their own.
    """

    def __init__(
        self,
        config: Config,
        listener: socket.socket,
        generation: int,
        poster: Optional[Poster] = None,
        log_handler: Optional[ForwardingHandler] = None,
        on_stop_listening: Callable[[], None] = lambda: None,
        secrets: Optional[Secrets] = None,
        durable: Optional[Durable] = None,
    ) -> None:
        self.config = config
        self.secrets = secrets if secrets is not None else Secrets(config.api_key)
        self.log_handler = log_handler
        self.log = logging.getLogger(config.logger_name)
        self.on_stop_listening = on_stop_listening
        self.counters = FlusherCounters(pid=os.getpid(), generation=generation)
        self.losses = LossBook(self.counters, self.log, self.secrets)  # count, log, scrub
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.durable = durable if durable is not None else Durable.open(config, self.log)
        hello = proto.hello(generation, self.durable.on)
        self.reader = Reader(listener, self.selector, self._on_message, hello, self.log)
        self.reader.on_close = self._on_close
        self.reader.on_torn = self._torn
        self.reader.on_records = self._on_records
        self.intake = Intake(config.flush_at, config.flush_interval_s, config.max_queue_bytes)
        self.waiters: Waiters[Conn] = Waiters()
        self.answers = Answers(self.waiters, self.intake.pending_ids, self.durable.on)
        self.durable.before_delete(lambda: self.answers.send_owed(time.monotonic()))
        self.lifetime = Lifetime(config.shutdown_timeout_s, config.linger_s, time.monotonic)
        self.delivery = Delivery(
            poster if poster is not None else HttpPoster(config, self.log),
            config.retry_policy,
            config.senders,
            self.wake,
            self.log,
            scrub=self.losses.scrub,
            clock=scaled(time.monotonic, config.time_scale),
            wait_scale=config.time_scale,
        )
        self._requests: list[tuple[Conn, bytes]] = []  # control messages, read not answered

    # -- the main loop -------------------------------------------------------------------
    def run(self) -> None:
        """Serve in the flusher process's main thread, with its signal handling."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self.lifetime.on_sigterm)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        self.serve()

    def serve(self) -> None:
        """Loop until the lifetime says to leave; then count what is left and stop."""
        self.delivery.start()
        self.log.debug("flusher %d started (pipeline %s)", os.getpid(), self.config.pipeline)
        try:
            while not self.lifetime.finished(time.monotonic(), len(self.waiters.unsettled)):
                self.step()
        finally:
            self._exit()

    def step(self) -> None:
        ready = self.selector.select(self._select_timeout())
        self._read_pass(ready)
        self._replay(time.monotonic())  # before requests: a flush covers what it took in
        self._answer_requests()
        self._take_outcomes()
        now = time.monotonic()
        holding = self.intake.held + len(self.waiters.unsettled)
        on_disk = self.durable.on and self.intake.held == self.intake.held_on_disk
        self.lifetime.activity(self.reader.connections, holding, now, on_disk)
        self.reader.resume_accepting(now)
        self.answers.send_due(now)
        self.durable.sync_if_due()
        for conn in self.reader.wake_pipes(now):
            self._read_pipe(conn)
        self._dispatch_due(now)
        self._follow_lifetime(now)

    def stop(self, reason: str) -> None:
        """Ask the loop (from any thread) to deliver what it holds and leave."""
        self.lifetime.request_end(reason)
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass  # already awake

    # -- steps ---------------------------------------------------------------------------
    def _select_timeout(self) -> float:
        candidates = (
            self.intake.next_due_at(),
            self.lifetime.next_deadline(time.monotonic()),
            self.reader.accept_paused_until,
            self.reader.next_pipe_wake(),
            self.answers.next_due_at(),
            _after(self.durable.sync_due_in()),
            time.monotonic() if self.durable.reading_back and not self.intake.full else None,
        )
        deadlines = [d for d in candidates if d is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else 3600.0

    def _read_pass(self, ready: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in ready:
            if key.data == "accept":
                self.reader.accept()
            elif key.data == "wake":
                drain_pipe(self.wake_r)
            elif isinstance(key.data, Conn) and key.data.open:
                self.reader.read(key.data, READS_PER_WAKE)
            elif isinstance(key.data, PipeOf) and key.data.conn.open:
                self._read_pipe(key.data.conn)

    def _read_pipe(self, conn: Conn) -> None:
        """Read a pipe, then poll it every ``NAP_S`` (unwatched: its writes wake
        nobody) until ``QUIET_POLLS`` reads in a row found it empty; then watch it."""
        if not conn.open:
            return
        if self.reader.read_pipe(conn, READS_PER_WAKE):
            conn.pipe_quiet_polls = 0
        else:
            conn.pipe_quiet_polls += 1
        if conn.pipe_quiet_polls < QUIET_POLLS:
            self.reader.nap(conn, nap_until(time.monotonic()))
        else:
            self.reader.watch(conn)

    def _answer_requests(self) -> None:
        """Answer control requests read so far; a flush reads the rest of the queue first."""
        while self._requests:
            conn, message = self._requests.pop(0)
            try:
                request = proto.parse_request(message)
            except proto.ProtocolError as exc:
                self._bad_message(conn, str(exc))
                continue
            if request.kind == proto.STATS:
                snapshot = self.counters.snapshot(
                    self.intake.held, self.delivery, self.reader.process_count()
                )
                snapshot.update(self.durable.snapshot())
                body = json.dumps(snapshot)
                reply(conn, proto.stats_reply(request.request_id, body.encode()))
                continue
            self.reader.read_all(READ_ALL_LIMIT)  # events queued before it leave now too
            self._dispatch(self.intake.cut_all())
            self.answers.flush_requested(conn, request.request_id)
        self.answers.answer_settled()

    def _take_outcomes(self) -> None:
        for settled in self.delivery.take_settled():
            self._settle(settled)
        if self.reader.paused and not self.intake.full:
            self.reader.resume()
        self.answers.answer_settled()

    def _dispatch_due(self, now: float) -> None:
        # No more waiting to fill batches when ending, or once nobody is left to fill them.
        drain = self.lifetime.ending or self.lifetime.draining(now)
        self._dispatch(self.intake.cut_all() if drain else self.intake.due(now))

    def _follow_lifetime(self, now: float) -> None:
        reason = self.lifetime.due(now)
        if reason is not None:
            self._begin_end(reason, now)

    # -- delivery and waiters --------------------------------------------------------------
    def _dispatch(self, batches: list[Batch]) -> None:
        for batch in batches:
            self.log.debug("sending %d events to /%s", len(batch), batch.endpoint)
            self.waiters.dispatched(batch.id)
            self.delivery.put(batch)

    def _settle(self, settled: Settled) -> None:
        """Release a handed-over batch; count (and log) every part of it that was lost."""
        batch = settled.batch
        self.intake.settled(batch)
        self.durable.release(batch.refs)  # delivered, or dropped for a counted reason
        if settled.losses:  # the next flush() of each process whose events these were says so
            for source in batch.sources:
                if isinstance(source, Conn) and not self.waiters.covers(source, batch.id):
                    source.dropped += 1
        self.waiters.settled(batch.id, settled.delivered)
        delivered = len(batch) - settled.lost
        self.counters.delivered += delivered
        if delivered:
            self.log.info("%d events sent to Trubrics (/%s).", delivered, batch.endpoint)
        for loss in settled.losses:
            self.losses.batch_loss(batch.endpoint, loss)

    def _replay(self, now: float) -> None:
        """Take in what was spilled, then what a previous flusher left, as room allows."""
        if self.durable.spilling and not self.intake.full:
            room = self.intake.max_bytes - self.intake.held_bytes
            for spilled, events in self.durable.read_back(room):
                self._take_spilled(spilled, events)
        if self.durable.replaying and not self.intake.full:
            room = self.intake.max_bytes - self.intake.held_bytes
            for pending, route in self.durable.replay_some(room):
                self._add_replayed(pending, route, now)

    def _take_spilled(self, spilled: Spilled, events: Optional[list[bytes]]) -> None:
        if events is None:  # its file gone or spoiled under us
            self.losses.record("spool_damaged", len(spilled.ref))
            self.losses.limited("spool_damaged", "%d spilled events unreadable", len(spilled.ref))
            self.durable.release([spilled.ref])
            self.waiters.settled(spilled.batch_id, False)
            return
        batch = Batch(spilled.endpoint, events, spilled.nbytes, spilled.batch_id, spilled.route)
        batch.refs = [spilled.ref]
        self.intake.take(batch)
        self._dispatch([batch])

    def _add_replayed(self, pending: Pending, route: Optional[Route], now: float) -> None:
        if pending.endpoint not in ENDPOINTS.values():  # written by no version of ours
            self.losses.record("bad_message", len(pending.events))
            self.durable.release([pending.ref])
            return
        nbytes = sum(map(len, pending.events))
        self._dispatch(
            self.intake.add_many(
                pending.endpoint, pending.events, nbytes, now, None, route, pending.ref
            )
        )

    # -- the end -----------------------------------------------------------------------------
    def _begin_end(self, reason: str, now: float) -> None:
        """Stop listening, take in what is already queued, then deliver it all."""
        if not self.lifetime.begin_end(reason, now):
            return
        self.log.debug("flusher %d ending: %s", os.getpid(), reason)
        self.reader.read_all(READ_ALL_LIMIT)
        # The socket goes while the listener still holds its inode, which therefore
        # cannot be a new flusher's yet (see _address.remove_if_ours).
        self.on_stop_listening()
        self.reader.stop_listening()
        self._answer_requests()
        self._dispatch(self.intake.cut_all())

    def _exit(self) -> None:
        self._take_outcomes()
        # The next flusher on the spool delivers these:
        kept = self.intake.held_on_disk + self.durable.spilled_events
        waiting = self.reader.discard_waiting()  # sent again by processes that can
        lost = self.intake.held - kept
        lost += sum(n for conn, n in waiting.items() if self.answers.lanes(conn) is None)
        if lost:
            self.losses.record("shutdown_timeout", lost)
            self.log.error("exiting with %d undelivered events (shutdown timeout)", lost)
        if kept:
            self.log.warning("exiting with %d undelivered events kept in the spool", kept)
        self.answers.abandon()  # nobody waits in vain: they lost events
        for conn in self.reader.open_connections():  # what each can count as settled
            lanes = self.answers.lanes(conn)  # all it sent that was read is on disk
            read = conn.events_read if lanes is not None or not lost else 0
            reply(conn, proto.bye(read, conn.dropped, lanes))
            self.reader.close(conn, take_pipe=False)
        self.delivery.stop(timeout_s=SENDER_JOIN_S)
        self.durable.close()
        self.log.debug("flusher %d exits: %s", os.getpid(), self.counters.snapshot(0))


def _after(delay_s: Optional[float]) -> Optional[float]:
    return None if delay_s is None else time.monotonic() + delay_s


def nap_until(now: float) -> float:
    """The end of a pipe's nap: the second tick of ``NAP_S`` after ``now``, so that
    the naps of every connection end together (one wake-up for all)."""
    return (math.floor(now / NAP_S) + 2) * NAP_S


def main(boot: dict[str, Any]) -> None:
    """Entry point of the flusher interpreter (see ``_spawn.BOOTSTRAP``)."""
    set_name(FLUSHER_COMM)  # its bootstrap, same command line, keeps the interpreter's
    config = Config.from_wire(boot["config"])
    handler = _logs.setup_flusher_logging(config.logger_name, config.log_level)
    secrets = Secrets(config.api_key)  # every route's key is added as it comes
    handler.addFilter(RedactingFilter(secrets))  # whatever a message or traceback holds
    listener = socket.socket(fileno=boot["listener_fd"])
    path, inode = boot["socket_path"], boot["socket_inode"]
    flusher = Flusher(config, listener, boot["generation"], None, handler, secrets=secrets)
    flusher.on_stop_listening = lambda: _address.remove_if_ours(path, inode)
    flusher.run()
