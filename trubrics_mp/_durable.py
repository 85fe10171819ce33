"""The flusher's spool role: events on disk from intake until settled (issue 14).

With ``spool_dir`` set, the flusher appends every group of events it takes
in to the spool (``_spool``) before they count as held, and acknowledges them
once their batch is settled: delivered, or dropped for a counted reason (a
drop is final; keeping it would resend a refused batch forever). What it
still holds when it exits, or dies, stays on disk; the next flusher on the
same directory replays it.

::

    connections -> Flusher._add_events -> Durable.keep -> Spool.append (ref)
                                               |
                   Intake batches carry refs   v
    Delivery settles a batch -> Durable.release(refs) -> Spool.ack
    Intake full: Durable.spill -> on disk only; read_back -> batches, as room comes
    next flusher: Durable.replay_some -> records of known routes -> Intake

Origins: a record's route tag also says where its events came from (a
connection's token, lane and first number, see ``_resend``); :class:`Seen`
holds every origin on disk, read back at open and added to at each append,
so that an event a process sends again after a flusher died is kept once.

Routes: a record carries a route tag (host and a digest of the key, never
the key). Events of the flusher's own settings replay at once; events of
another client's key wait (parked, in memory, at most ``PARKED_FRACTION`` of
the bound) until a client with that key connects and tells its route. What
does not fit stays on disk for a later flusher; nothing is acknowledged
without being settled.

Caveats: when the directory is unusable (another user's, writable by others,
read-only, locked by another live flusher) or an append is refused (spool
full, disk full, I/O error), the events stay in memory only, as without a
spool, with one log line per reason; ``state`` and the spool's counters say
so. One thread only: the flusher's main loop.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

from ._batching import new_batch_id
from ._config import Config
from ._ratelimit import LogLimiter
from ._resend import Origin, Seen
from ._route import Route
from ._spool import Pending, Ref, Spool, SpoolUnavailable, route_tag

PARKED_FRACTION = 4  # events of unknown routes may take a quarter of the bound
SPILL_READ_RECORDS = 64  # spilled records read back per main-loop step at most
REPLAY_BYTES_PER_STEP = 4 * 1024 * 1024  # what one main-loop step reads back at most
_ORIGIN = " from "  # between a record's route tag and its origin's tag


@dataclasses.dataclass(frozen=True)
class Spilled:
    """A record on disk only: its batch's id (promised to waiters), where, whose."""

    batch_id: int
    ref: Ref
    endpoint: str
    route: Optional[Route]
    nbytes: int


class Durable:
    """The spool of one flusher, or none (``on`` is False): then every call is a no-op."""

    def __init__(self, spool: Optional[Spool], state: str, config: Config, log: logging.Logger):
        self.spool = spool
        self.state = state  # "off", "on", or "unavailable: <reason>"
        self._config = config
        self._log = log
        self._limiter = LogLimiter()
        self._own = route_tag(config.host, config.api_key)
        self._tags: dict[Optional[Route], str] = {None: self._own}
        self._known: dict[str, Optional[Route]] = {self._own: None}
        self._replay: Optional[Iterator[Pending]] = spool.replay() if spool else None
        self.seen = Seen()
        for tag, count in spool.tags_at_open if spool else []:
            origin = Origin.parse(_split_tag(tag)[1])
            if origin is not None:
                self.seen.add(origin, count)
        if spool is not None:
            spool.tags_at_open = []
        self.resent_on_disk = 0  # events sent again that the spool already held
        self._parked: dict[str, list[Pending]] = {}
        self.parked_bytes = 0
        self._spilled: collections.deque[Spilled] = collections.deque()
        self.spilled_events = 0  # on disk only, not in memory (see spill)
        self.left_on_disk = 0  # replayed records of unknown routes with no room to park

    @classmethod
    def open(cls, config: Config, log: logging.Logger) -> Durable:
        """The spool of ``config.spool_dir``; on refusal, a logged memory-only role."""
        if not config.spool_dir:
            return cls(None, "off", config, log)
        try:
            spool = Spool.open(config.spool_dir, config.spool_max_bytes)
        except SpoolUnavailable as exc:
            log.error(
                "the spool directory %s cannot be used (%s): %s; events are kept in memory only",
                config.spool_dir,
                exc.reason,
                exc,
            )
            return cls(None, f"unavailable: {exc.reason}", config, log)
        return cls(spool, "on", config, log)

    @property
    def on(self) -> bool:
        return self.spool is not None

    # -- intake and settling ---------------------------------------------------------
    def keep(
        self,
        endpoint: str,
        route: Optional[Route],
        events: list[bytes],
        origin: Optional[Origin] = None,
    ) -> Optional[Ref]:
        """Append ``events`` (from ``origin`` on) to the spool; their ref, or None
        (memory only, logged)."""
        if self.spool is None:
            return None
        tag = self.tag(route)
        if origin is not None:
            tag += _ORIGIN + origin.tag
        appended = self.spool.append(endpoint, tag, events)
        if appended.ref is not None and origin is not None:
            self.seen.add(origin, len(events))
        if appended.ref is None:
            self._limiter.log(
                self._log,
                logging.ERROR,
                f"spool_{appended.reason}",
                "the spool refused %d events (%s): they are kept in memory only",
                len(events),
                appended.reason,
            )
        return appended.ref

    def already_kept(self, origin: Origin) -> bool:
        """Whether the event of ``origin`` (sent again) is in the spool already; counted."""
        if self.spool is None or not self.seen.has(origin):
            return False
        self.resent_on_disk += 1
        return True

    def before_delete(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` before the spool deletes a segment (see ``Spool``)."""
        if self.spool is not None:
            self.spool.before_delete = callback

    def release(self, refs: Iterable[Ref]) -> None:
        """Their batch is settled: remove them from the spool."""
        if self.spool is not None:
            self.spool.ack(refs)

    def tag(self, route: Optional[Route]) -> str:
        tag = self._tags.get(route)
        if tag is None:
            assert route is not None
            tag = self._tags[route] = route_tag(route.host, route.api_key)
        return tag

    # -- past the bound in memory: on disk only -------------------------------------------
    def spill(
        self,
        endpoint: str,
        route: Optional[Route],
        events: list[bytes],
        origin: Optional[Origin] = None,
    ) -> list[int]:
        """Put the first events of ``events`` on disk only (the flusher's memory is at
        its bound), as batch-sized records; the ids their batches will have, one per
        ``flush_at`` events spilled (all of them, unless the spool refused one: the
        caller holds the rest). Read back with :meth:`read_back` once there is room."""
        if self.spool is None:
            return []
        size = self.chunk_size(route)
        chunks = [events[at : at + size] for at in range(0, len(events), size)]
        if not self.has_room(sum(map(len, events))):
            return []
        ids = []
        for at, chunk in zip(range(0, len(events), size), chunks):
            ref = self.keep(endpoint, route, chunk, None if origin is None else origin.at(at))
            if ref is None:  # disk full, an I/O error
                break
            spilled = Spilled(new_batch_id(), ref, endpoint, route, sum(map(len, chunk)))
            self._spilled.append(spilled)
            self.spilled_events += len(chunk)
            ids.append(spilled.batch_id)
        return ids

    def chunk_size(self, route: Optional[Route]) -> int:
        """Events per spilled record: a batch of ``route``."""
        return self._config.flush_at if route is None else route.flush_at

    def read_back(self, room_bytes: int) -> list[tuple[Spilled, Optional[list[bytes]]]]:
        """Spilled records, oldest first, while they fit in ``room_bytes``, with their
        events read back (None for a record that is gone or spoiled)."""
        taken: list[Spilled] = []
        while self._spilled and len(taken) < SPILL_READ_RECORDS:
            if self._spilled[0].nbytes > room_bytes and taken:
                break
            taken.append(self._spilled.popleft())
            room_bytes -= taken[-1].nbytes
        if self.spool is None or not taken:
            return []
        self.spilled_events -= sum(len(spilled.ref) for spilled in taken)
        return list(zip(taken, self.spool.read([spilled.ref for spilled in taken])))

    @property
    def spilling(self) -> bool:
        return bool(self._spilled)

    @property
    def reading_back(self) -> bool:
        """Spilled records or a previous flusher's wait to be taken in."""
        return bool(self._spilled) or self._replay is not None

    def has_room(self, nbytes: int = 0) -> bool:
        """Whether the spool takes ``nbytes`` more (reading need not pause for memory)."""
        return self.spool is not None and self.spool.has_room(nbytes)

    # -- replay ----------------------------------------------------------------------
    def learn(self, route: Route) -> list[tuple[Pending, Optional[Route]]]:
        """A client told ``route``: the parked records of its key, now deliverable."""
        tag = self.tag(route)
        self._known.setdefault(tag, route)
        parked = self._parked.pop(tag, [])
        self.parked_bytes -= sum(_size(p) for p in parked)
        return [(p, route) for p in parked]

    def replay_some(self, room_bytes: int) -> list[tuple[Pending, Optional[Route]]]:
        """Records of the previous flusher to take in now (about ``room_bytes`` at most)."""
        taken: list[tuple[Pending, Optional[Route]]] = []
        budget = min(room_bytes, REPLAY_BYTES_PER_STEP)
        while self._replay is not None and budget > 0:
            pending = next(self._replay, None)
            if pending is None:
                self._replay = None
                break
            pending = dataclasses.replace(pending, route=_split_tag(pending.route)[0])
            size = _size(pending)
            if pending.route in self._known:
                taken.append((pending, self._known[pending.route]))
                budget -= size
            elif self.parked_bytes + size <= self._config.max_queue_bytes // PARKED_FRACTION:
                self._parked.setdefault(pending.route, []).append(pending)
                self.parked_bytes += size
            else:
                self.left_on_disk += len(pending.events)
        return taken

    @property
    def replaying(self) -> bool:
        return self._replay is not None

    # -- the main loop's timer and the end ------------------------------------------------
    def sync_due_in(self) -> Optional[float]:
        return None if self.spool is None else self.spool.sync_due_in()

    def sync_if_due(self) -> None:
        if self.spool is not None:
            self.spool.sync_if_due()

    def snapshot(self) -> dict[str, Any]:
        """The spool's part of the flusher's stats."""
        if self.spool is None:
            return {"spool": self.state}
        stats = self.spool.stats()
        return {
            "spool": self.state,
            "spool_events": stats.events,
            "spool_bytes": stats.bytes,
            "spool_oldest_age_s": stats.oldest_age_s,
            "spool_refused": stats.refused,
            "spool_skipped_records": stats.skipped_records,
            "spool_resent_on_disk": self.resent_on_disk,
        }

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


def _split_tag(tag: str) -> tuple[str, str]:
    """A record's route tag and its origin's tag ("" for a record without one)."""
    route, separator, origin = tag.rpartition(_ORIGIN)
    return (route, origin) if separator else (tag, "")


def _size(pending: Pending) -> int:
    return sum(map(len, pending.events))
