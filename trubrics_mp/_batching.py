"""Batching decisions (pure: the caller passes ``now``, nothing here does I/O).

Events arrive already encoded as JSON bytes. They wait per endpoint until
``flush_at`` of them are there or the oldest has waited ``flush_interval_s``,
whichever comes first; then they leave as one :class:`Batch`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Optional

_batch_ids = itertools.count(1)


@dataclasses.dataclass
class Batch:
    """Events bound for one endpoint in one request."""

    endpoint: str
    events: list[bytes]
    id: int = dataclasses.field(default_factory=lambda: next(_batch_ids))
    attempts: int = 0

    def body(self) -> bytes:
        return b"[" + b",".join(self.events) + b"]"

    def __len__(self) -> int:
        return len(self.events)


@dataclasses.dataclass
class _Pending:
    events: list[bytes] = dataclasses.field(default_factory=list)
    oldest_at: float = 0.0


class Batcher:
    """Groups events per endpoint; ``add`` and ``due`` hand out full or old batches."""

    def __init__(self, flush_at: int, flush_interval_s: float) -> None:
        self._flush_at = flush_at
        self._interval_s = flush_interval_s
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return sum(len(p.events) for p in self._pending.values())

    def add(self, endpoint: str, event: bytes, now: float) -> Optional[Batch]:
        """Queue ``event``; return a batch if this event filled one."""
        pending = self._pending.setdefault(endpoint, _Pending())
        if not pending.events:
            pending.oldest_at = now
        pending.events.append(event)
        if len(pending.events) >= self._flush_at:
            return self._cut(endpoint)
        return None

    def due(self, now: float) -> list[Batch]:
        """Batches whose oldest event has waited ``flush_interval_s``."""
        return [
            self._cut(endpoint)
            for endpoint, pending in list(self._pending.items())
            if pending.events and now - pending.oldest_at >= self._interval_s
        ]

    def cut_all(self) -> list[Batch]:
        """Every waiting event, as batches (for ``flush()`` and shutdown)."""
        return [self._cut(endpoint) for endpoint, p in list(self._pending.items()) if p.events]

    def next_due_at(self) -> Optional[float]:
        times = [p.oldest_at + self._interval_s for p in self._pending.values() if p.events]
        return min(times) if times else None

    def _cut(self, endpoint: str) -> Batch:
        pending = self._pending.pop(endpoint)
        return Batch(endpoint, pending.events)
