"""Waiters: ``flush()`` requests, and confirmations, waiting for the batches they cover.

Pure bookkeeping, no I/O: the flusher tells this role which batches it handed
to delivery and which were settled, and asks which waiters can be answered.
A confirmation is the flusher's own waiter for one connection: once every
batch it covers is settled, the flusher tells the process how many of its
events are settled (a ``K`` message, see ``_protocol``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Generic, Optional, TypeVar

Peer = TypeVar("Peer")


@dataclasses.dataclass
class Waiter(Generic[Peer]):
    """A request from ``peer``; ``ok`` turns False if anything it covers was lost.

    ``confirms`` is set for a confirmation: the number of the peer's events
    read when it was added, which are settled once it is answerable.
    """

    peer: Peer
    request_id: int
    batch_ids: set[int]
    ok: bool
    confirms: Optional[int] = None


class Waiters(Generic[Peer]):
    """Batches handed to delivery and not yet settled, and who waits for them.

    Invariant: every id a waiter waits for is in ``unsettled`` or is the id
    of events still waiting in the batcher; a request covers exactly the
    batches unsettled when it was added (the flusher cuts every waiting batch
    before it adds one), a confirmation those and the waiting ones.
    """

    def __init__(self) -> None:
        self.unsettled: set[int] = set()
        self._waiting: list[Waiter[Peer]] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def dispatched(self, batch_id: int) -> None:
        self.unsettled.add(batch_id)

    def settled(self, batch_id: int, ok: bool) -> None:
        self.unsettled.discard(batch_id)
        for waiter in self._waiting:
            if batch_id in waiter.batch_ids:
                waiter.batch_ids.discard(batch_id)
                waiter.ok = waiter.ok and ok

    def add(self, peer: Peer, request_id: int, ok: bool) -> None:
        """Wait for every batch unsettled now; ``ok`` False if the peer lost events already."""
        self._waiting.append(Waiter(peer, request_id, set(self.unsettled), ok))

    def add_confirmation(self, peer: Peer, events: int, pending: Iterable[int]) -> None:
        """Wait for every batch unsettled now and the ``pending`` ones (not yet cut)."""
        batch_ids = self.unsettled.union(pending)
        self._waiting.append(Waiter(peer, 0, batch_ids, True, confirms=events))

    def covers(self, peer: Peer, batch_id: int) -> bool:
        """Whether a request of ``peer`` waits for ``batch_id`` (it will hear of its loss)."""
        return any(
            w.peer is peer and w.confirms is None and batch_id in w.batch_ids for w in self._waiting
        )

    def abandon(self) -> list[Waiter[Peer]]:
        """Remove and return every waiter (the flusher is leaving without settling)."""
        waiting, self._waiting = self._waiting, []
        return waiting

    def answerable(self) -> list[Waiter[Peer]]:
        """Remove and return the waiters whose batches are all settled, oldest first."""
        done = [w for w in self._waiting if not w.batch_ids]
        self._waiting = [w for w in self._waiting if w.batch_ids]
        return done
