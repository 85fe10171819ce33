"""Batching decisions and the bound on what the flusher holds (pure: the caller passes
``now``, nothing here does I/O).

Events arrive already encoded as JSON bytes. They wait per endpoint and
route (see ``_route``: a client's host, key and batch settings) until
``flush_at`` of them are there or the oldest has waited ``flush_interval_s``
(the route's, else the batcher's), whichever comes first; then they leave as
one :class:`Batch`.
"""

from __future__ import annotations

import itertools
from typing import Optional

from ._pipe import READ_BYTES
from ._route import Route
from ._spool_index import Ref

_batch_ids = itertools.count(1)


def new_batch_id() -> int:
    """An id no batch has had (ids are promised before a batch exists, see _durable)."""
    return next(_batch_ids)


OVERSHOOT_BYTES = 2 * READ_BYTES  # one pipe read, and a closing connection's pipe


class Batch:
    """Events bound for one endpoint of one route; ``attempts`` counts its POSTs.

    ``alone`` marks a batch that must travel in a request of its own (it
    shared one that the API refused: which batch caused it is unknown).
    """

    __slots__ = (
        "endpoint",
        "route",
        "events",
        "nbytes",
        "id",
        "attempts",
        "alone",
        "ready_at",
        "first_tried_at",
        "sources",
        "refs",
    )

    def __init__(
        self,
        endpoint: str,
        events: list[bytes],
        nbytes: int = -1,
        batch_id: int = 0,
        route: Optional[Route] = None,
    ) -> None:
        self.endpoint = endpoint
        self.route = route  # None: the flusher's own settings
        self.events = events
        self.nbytes = sum(map(len, events)) if nbytes < 0 else nbytes
        self.id = batch_id or next(_batch_ids)
        self.attempts = 0
        self.alone = False
        self.ready_at = 0.0  # when delivery took it (monotonic seconds)
        self.first_tried_at = 0.0  # when its first attempt began (monotonic seconds)
        self.sources: set[object] = set()  # who sent its events (told if it is lost)
        self.refs: list[Ref] = []  # where its events are in the spool (see _durable)

    @property
    def destination(self) -> tuple[str, Optional[Route]]:
        """Batches may share a request only if this is the same."""
        return self.endpoint, self.route

    def body(self) -> bytes:
        return b"[" + b",".join(self.events) + b"]"

    @staticmethod
    def join_bodies(batches: list[Batch]) -> bytes:
        """One JSON list of every event of ``batches`` (all for one destination)."""
        return b"[" + b",".join(event for batch in batches for event in batch.events) + b"]"

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return f"Batch(id={self.id}, endpoint={self.endpoint!r}, events={len(self)})"


class _Pending:
    """Events waiting for their batch; ``id`` is the id that batch will have."""

    __slots__ = ("id", "events", "nbytes", "sources", "flush_at", "due_at", "refs")

    def __init__(self, now: float, flush_at: int, interval_s: float) -> None:
        self.id = next(_batch_ids)
        self.flush_at = flush_at
        self.due_at = now + interval_s
        self.sources: set[object] = set()
        self.events: list[bytes] = []
        self.nbytes = 0
        self.refs: list[Ref] = []


Destination = tuple[str, Optional[Route]]  # an endpoint, and a route (None: the default)


class Batcher:
    """Groups events per destination; ``add`` and ``due`` hand out full or old batches.

    ``flush_at`` and ``flush_interval_s`` apply to events without a route.
    Invariant: a pending entry exists only while it has at least one event.
    """

    def __init__(self, flush_at: int, flush_interval_s: float) -> None:
        self._flush_at = flush_at
        self._interval_s = flush_interval_s
        self._pending: dict[Destination, _Pending] = {}

    def __len__(self) -> int:
        return sum(len(p.events) for p in self._pending.values())

    def add(
        self,
        endpoint: str,
        event: bytes,
        now: float,
        source: object = None,
        route: Optional[Route] = None,
    ) -> Optional[Batch]:
        """Queue ``event`` (sent by ``source``); return a batch if this event filled one."""
        full = self.add_many(endpoint, [event], len(event), now, source, route)
        return full[0] if full else None

    def add_many(
        self,
        endpoint: str,
        events: list[bytes],
        nbytes: int,
        now: float,
        source: object = None,
        route: Optional[Route] = None,
        ref: Optional[Ref] = None,
    ) -> list[Batch]:
        """Queue ``events`` (``nbytes`` in all, sent by ``source``, in the spool at
        ``ref`` if given); the batches they filled.

        A pipe read's events are added in slices, with no work per event.
        """
        destination = (endpoint, route)
        full: list[Batch] = []
        start = 0
        while start < len(events):
            pending = self._pending.get(destination)
            if pending is None:
                pending = self._pending[destination] = self._new_pending(now, route)
            part = events[start : start + pending.flush_at - len(pending.events)]
            if ref is not None:
                whole = len(part) == len(events)
                pending.refs.append(ref if whole else ref.part(start, start + len(part)))
            start += len(part)
            pending.events += part
            pending.nbytes += nbytes if len(part) == len(events) else sum(map(len, part))
            pending.sources.add(source)
            if len(pending.events) >= pending.flush_at:
                full.append(self._cut(destination))
        return full

    def due(self, now: float) -> list[Batch]:
        """Batches whose oldest event has waited its flush interval."""
        return [
            self._cut(destination)
            for destination, pending in list(self._pending.items())
            if now >= pending.due_at
        ]

    def cut_all(self) -> list[Batch]:
        """Every waiting event, as batches (for ``flush()`` and shutdown)."""
        return [self._cut(destination) for destination in list(self._pending)]

    def pending_ids(self) -> list[int]:
        """The ids the batches of the events waiting now will have once cut."""
        return [pending.id for pending in self._pending.values()]

    def next_due_at(self) -> Optional[float]:
        times = [p.due_at for p in self._pending.values()]
        return min(times) if times else None

    def _new_pending(self, now: float, route: Optional[Route]) -> _Pending:
        if route is None:
            return _Pending(now, self._flush_at, self._interval_s)
        return _Pending(now, route.flush_at, route.flush_interval_s)

    def _cut(self, destination: Destination) -> Batch:
        pending = self._pending.pop(destination)
        endpoint, route = destination
        batch = Batch(endpoint, pending.events, pending.nbytes, pending.id, route)
        batch.sources = pending.sources
        batch.refs = pending.refs
        return batch


class Intake(Batcher):
    """A :class:`Batcher` that also keeps the bound on what the flusher holds.

    Invariants: ``held`` and ``held_bytes`` count the events taken in and not
    yet settled (waiting in a batch, or in a batch being delivered), and their
    JSON bytes. The caller stops reading once :attr:`full` (it leaves events in
    the kernel), but hands on the rest of a pipe read it made and what a
    closing connection's pipe holds: ``held_bytes`` exceeds ``max_bytes`` by
    less than :data:`OVERSHOOT_BYTES` (then :attr:`overfull`, which the caller
    checks before each :meth:`add`, and drops).
    """

    def __init__(self, flush_at: int, flush_interval_s: float, max_bytes: int) -> None:
        super().__init__(flush_at, flush_interval_s)
        self.max_bytes = max_bytes
        self.held = 0
        self.held_bytes = 0
        self.held_on_disk = 0  # of ``held``, the events that are in the spool too

    @property
    def full(self) -> bool:
        return self.held_bytes >= self.max_bytes

    @property
    def overfull(self) -> bool:
        return self.held_bytes >= self.max_bytes + OVERSHOOT_BYTES

    def add_many(
        self,
        endpoint: str,
        events: list[bytes],
        nbytes: int,
        now: float,
        source: object = None,
        route: Optional[Route] = None,
        ref: Optional[Ref] = None,
    ) -> list[Batch]:
        self.held += len(events)
        self.held_bytes += nbytes
        if ref is not None:
            self.held_on_disk += len(events)
        return super().add_many(endpoint, events, nbytes, now, source, route, ref)

    def take(self, batch: Batch) -> None:
        """Hold ``batch``, made elsewhere (read back from the spool), as if cut here."""
        self.held += len(batch)
        self.held_bytes += batch.nbytes
        self.held_on_disk += sum(map(len, batch.refs))

    def settled(self, batch: Batch) -> None:
        """``batch`` was delivered or dropped: its events are no longer held."""
        self.held -= len(batch)
        self.held_bytes -= batch.nbytes
        self.held_on_disk -= sum(map(len, batch.refs))
