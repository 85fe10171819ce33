"""The flusher's handling of what connections send (a part of ``_flusher.Flusher``).

Events (one per socket message, or a pipe read's worth at once), a client's
route and logger level, and anything that is none of these: a bad message is
counted, logged once and costs its connection (see :meth:`_bad_message`).
The events go to the flusher's roles: the spool (``_durable``) first when it
is on, then the intake (``_batching``), or the spool only once the intake is at
its bound; a connection hears that its events are settled or on disk
(``_answers``). Events are numbered per connection and lane as they are read,
and kept in the spool with that origin; an event a process sends again after
a flusher died (``P``, see ``_resend``) keeps its first origin, and is dropped
if the spool already holds it.

Kept apart from the main loop for size; :class:`Messages` is a mixin whose
attributes are the roles :class:`_flusher.Flusher` builds.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from . import _logs
from . import _protocol as proto
from ._answers import Answers
from ._batching import Batch, Intake
from ._config import EVENTS_ENDPOINT, LLM_EVENTS_ENDPOINT, Config
from ._durable import Durable
from ._logs import ForwardingHandler
from ._losses import LossBook
from ._reader import Conn, Reader, reply
from ._redact import Secrets
from ._resend import Origin, parse_resend
from ._route import Route
from ._spool import Pending
from ._stats import FlusherCounters
from ._waiters import Waiters

ENDPOINTS = {proto.EVENT[0]: EVENTS_ENDPOINT, proto.LLM_EVENT[0]: LLM_EVENTS_ENDPOINT}


class Messages:
    """What the flusher does with each message a connection sends."""

    config: Config
    counters: FlusherCounters
    losses: LossBook
    intake: Intake
    reader: Reader
    durable: Durable
    answers: Answers
    waiters: Waiters[Conn]
    secrets: Secrets
    log: logging.Logger
    log_handler: Optional[ForwardingHandler]
    _requests: list[tuple[Conn, bytes]]

    def _dispatch(self, batches: list[Batch]) -> None:
        raise NotImplementedError  # the flusher's: hand batches to delivery

    def _add_replayed(self, pending: Pending, route: Optional[Route], now: float) -> None:
        raise NotImplementedError  # the flusher's: take in events a previous flusher left

    def _on_message(self, conn: Conn, kind: int, payload: bytes, lane: int) -> None:
        endpoint = ENDPOINTS.get(kind)
        if endpoint is not None:
            if not self._plausible_event(payload):
                conn.number(lane)  # numbered all the same (see _bad_message)
                self._bad_message(conn, f"an event of {len(payload)} bytes that is no JSON object")
                return
            self._add_events(conn, endpoint, [payload], len(payload), lane)
        elif kind == proto.RESEND[0]:
            self._take_resent(conn, payload, lane)
        elif kind in proto.REQUEST_KINDS:
            self._requests.append((conn, bytes((kind,)) + payload))
        elif kind == proto.LEVEL[0]:
            self._declare_level(conn, payload)
        elif kind == proto.ROUTE[0]:
            self._take_route(conn, payload)
        else:
            self._bad_message(conn, f"unknown kind {bytes((kind,))!r}")

    def _on_records(self, conn: Conn, records: list[bytes], lane: int) -> None:
        """A pipe read: plain events, each plausible, go in at once (the hot path);
        anything else goes message by message."""
        limit = self.config.max_event_bytes + 1  # _plausible_event() inlined, with the kind
        payloads = [
            r[1:] for r in records if r.startswith(b"E{") and r.endswith(b"}") and len(r) <= limit
        ]
        if len(payloads) < len(records):
            self.reader.each_record(conn, records, lane)
            return
        if payloads:
            nbytes = sum(map(len, payloads))
            self._add_events(conn, EVENTS_ENDPOINT, payloads, nbytes, lane)

    def _take_resent(self, conn: Conn, payload: bytes, lane: int) -> None:
        """An event sent again after a flusher died: dropped if the spool has it."""
        parsed = parse_resend(payload)
        endpoint = None if parsed is None else ENDPOINTS.get(parsed[1][0] if parsed[1] else 0)
        if parsed is None or endpoint is None or not self._plausible_event(parsed[1][1:]):
            conn.number(lane)
            self._bad_message(conn, f"a message sent again of {len(payload)} bytes, no event")
            return
        origin, event = parsed[0], parsed[1][1:]
        if not self.durable.already_kept(origin):
            self._add_events(conn, endpoint, [event], len(event), lane, origin)
            return
        conn.number(lane)
        conn.events_read += 1
        self.answers.confirm(conn, time.monotonic(), on_disk=True)

    def _add_events(
        self,
        conn: Conn,
        endpoint: str,
        payloads: list[bytes],
        nbytes: int,
        lane: int,
        origin: Optional[Origin] = None,
    ) -> None:
        """Take in events read from ``lane`` (``origin``: where they were first sent)."""
        self.counters.count_received(conn.pid, len(payloads))
        conn.events_read += len(payloads)
        first = conn.number(lane, len(payloads))
        if origin is None and self.durable.on:
            origin = Origin(conn.token, lane, first)
        now = time.monotonic()
        if self.intake.full and self.durable.on:
            spilled = self._spill(conn, endpoint, payloads, origin)
            if spilled == len(payloads):
                self.answers.confirm(conn, now, on_disk=True)
                return
            payloads = payloads[spilled:]  # refused by the spool: held like any other
            nbytes = sum(map(len, payloads))
            origin = None if origin is None else origin.at(spilled)
        if self.intake.overfull:  # read past the bound (cannot happen while reads pause)
            conn.dropped += len(payloads)
            self.losses.record("queue_full", len(payloads))
            self.losses.limited(
                "queue_full",
                "queue full (%d bytes held): %d events were dropped",
                self.intake.max_bytes,
                len(payloads),
            )
            return
        ref = self.durable.keep(endpoint, conn.route, payloads, origin) if self.durable.on else None
        conn.spool_refused = conn.spool_refused or (self.durable.on and ref is None)
        batches = self.intake.add_many(endpoint, payloads, nbytes, now, conn, conn.route, ref)
        if batches:
            self._dispatch(batches)
        self.answers.confirm(conn, now, on_disk=ref is not None)
        if self.intake.full and not self.durable.has_room():
            self.reader.pause()  # what comes next waits in the kernel, then in each process
            self.losses.limited(
                "paused",
                "holding %d events (%d bytes, the bound): reading paused until some are sent",
                self.intake.held,
                self.intake.held_bytes,
                level=logging.WARNING,
            )

    def _spill(
        self, conn: Conn, endpoint: str, payloads: list[bytes], origin: Optional[Origin]
    ) -> int:
        """At the bound in memory, put ``payloads`` on disk only; how many it could.

        Their batches' ids are promised now, so that a flush covers them; they
        are read back (``_replay``) as room comes.
        """
        ids = self.durable.spill(endpoint, conn.route, payloads, origin)
        for batch_id in ids:
            self.waiters.dispatched(batch_id)
        return min(len(payloads), len(ids) * self.durable.chunk_size(conn.route))

    def _take_route(self, conn: Conn, payload: bytes) -> None:
        """Where ``conn``'s events go from now on (its client's host, key, batching),
        and its token."""
        conn.token, payload = proto.parse_route(payload)
        try:
            route = Route.from_bytes(payload)
        except (ValueError, TypeError) as exc:  # the message is never quoted: it has a key
            self._bad_message(conn, f"a route that is no valid settings ({type(exc).__name__})")
            return
        self.secrets.add(route.api_key)
        conn.route = route
        for pending, known in self.durable.learn(route):  # a previous flusher's, on disk
            self._add_replayed(pending, known, time.monotonic())

    def _declare_level(self, conn: Conn, payload: bytes) -> None:
        """A client's logger level: it becomes the flusher's; the client takes records."""
        level = _logs.declared_level(payload)
        if level is None:
            self._bad_message(conn, f"a level of {payload[:20]!r}")
            return
        self.log.setLevel(level)
        if self.log_handler is not None:
            self.log_handler.declare(conn, lambda message: reply(conn, message))

    def _on_close(self, conn: Conn) -> None:
        if self.log_handler is not None:
            self.log_handler.forget(conn)
        if not self.reader.has_pid(conn.pid):
            self.counters.process_gone(conn.pid)

    def _plausible_event(self, payload: bytes) -> bool:
        """What can be checked at no cost per event: the size, and ``{`` ... ``}``.

        A payload that passes and still is no JSON object is caught if the API
        refuses its batch (``_delivery`` then sifts the batch's events).
        """
        return (
            len(payload) <= self.config.max_event_bytes
            and payload[:1] == b"{"
            and payload[-1:] == b"}"
        )

    def _bad_message(self, conn: Conn, what: str) -> None:
        """Drop, count and log (once) a bad message; close its connection.

        What the peer queued after it on the socket is lost with the
        connection: a client counts it as ``flusher_gone`` (never confirmed),
        takes back what its pipe still holds, and reconnects. With a spool it
        first hears what is on disk, the bad message included, so that it
        sends again only what came after it.
        """
        self.answers.confirm_at_end(conn)
        self.losses.record("bad_message", 1)
        if not conn.complained:
            conn.complained = True
            self.losses.limited(
                "bad_message",
                "closed the connection of pid %d after a bad message: %s",
                conn.pid,
                what,
            )
        self.reader.close(conn, take_pipe=False)  # its process takes back the rest

    def _torn(self, conn: Conn, pieces: int) -> None:
        self.losses.record("bad_message", pieces)
        self.losses.limited("bad_message", "a torn record in the pipe of pid %d", conn.pid)
