"""Batching decisions and the bound on what the flusher holds (pure: the caller passes
``now``, nothing here does I/O).

Events arrive already encoded as JSON bytes. They wait per endpoint until
``flush_at`` of them are there or the oldest has waited ``flush_interval_s``,
whichever comes first; then they leave as one :class:`Batch`.
"""

from __future__ import annotations

import itertools
from typing import Optional

_batch_ids = itertools.count(1)


class Batch:
    """Events bound for one endpoint in one request; ``attempts`` counts its POSTs."""

    __slots__ = ("endpoint", "events", "id", "attempts")

    def __init__(self, endpoint: str, events: list[bytes]) -> None:
        self.endpoint = endpoint
        self.events = events
        self.id = next(_batch_ids)
        self.attempts = 0

    def body(self) -> bytes:
        return b"[" + b",".join(self.events) + b"]"

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return f"Batch(id={self.id}, endpoint={self.endpoint!r}, events={len(self)})"


class _Pending:
    __slots__ = ("events", "oldest_at")

    def __init__(self, now: float) -> None:
        self.events: list[bytes] = []
        self.oldest_at = now


class Batcher:
    """Groups events per endpoint; ``add`` and ``due`` hand out full or old batches.

    Invariant: a pending entry exists only while it has at least one event.
    """

    def __init__(self, flush_at: int, flush_interval_s: float) -> None:
        self._flush_at = flush_at
        self._interval_s = flush_interval_s
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return sum(len(p.events) for p in self._pending.values())

    def add(self, endpoint: str, event: bytes, now: float) -> Optional[Batch]:
        """Queue ``event``; return a batch if this event filled one."""
        pending = self._pending.get(endpoint)
        if pending is None:
            pending = self._pending[endpoint] = _Pending(now)
        pending.events.append(event)
        if len(pending.events) >= self._flush_at:
            return self._cut(endpoint)
        return None

    def due(self, now: float) -> list[Batch]:
        """Batches whose oldest event has waited ``flush_interval_s``."""
        return [
            self._cut(endpoint)
            for endpoint, pending in list(self._pending.items())
            if now - pending.oldest_at >= self._interval_s
        ]

    def cut_all(self) -> list[Batch]:
        """Every waiting event, as batches (for ``flush()`` and shutdown)."""
        return [self._cut(endpoint) for endpoint in list(self._pending)]

    def next_due_at(self) -> Optional[float]:
        times = [p.oldest_at + self._interval_s for p in self._pending.values()]
        return min(times) if times else None

    def _cut(self, endpoint: str) -> Batch:
        return Batch(endpoint, self._pending.pop(endpoint).events)


class Intake(Batcher):
    """A :class:`Batcher` that also keeps the bound on what the flusher holds.

    Invariant: ``held`` is the number of events taken in and not yet settled
    (waiting in a batch, or in a batch being delivered); it never exceeds
    ``max_held``: the caller checks :attr:`full` before :meth:`add`.
    """

    def __init__(self, flush_at: int, flush_interval_s: float, max_held: int) -> None:
        super().__init__(flush_at, flush_interval_s)
        self.max_held = max_held
        self.held = 0

    @property
    def full(self) -> bool:
        return self.held >= self.max_held

    def add(self, endpoint: str, event: bytes, now: float) -> Optional[Batch]:
        self.held += 1
        return super().add(endpoint, event, now)

    def settled(self, batch: Batch) -> None:
        """``batch`` was delivered or dropped: its events are no longer held."""
        self.held -= len(batch)
