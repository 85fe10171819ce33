"""Batches split after a 413 or sifted after a refusal, and settling the batch they
came from (pure bookkeeping).

A batch the API refuses as too large (413) is split into two halves that are
sent on their own, and split again while they are refused. A batch refused as
malformed (400, 422) is sifted: if some of its events are not JSON objects (a
broken peer's, which only the size and the braces were checked of), they are
dropped as ``bad_message`` and the rest goes again, as one part. The main loop
never sees the halves: it handed over one batch and hears back once about
that batch, when every part of it is settled, with what was lost (an event
too large alone, a part whose retries were spent...). So its invariants hold
as they are: ``Intake.settled(batch)`` releases ``len(batch)`` events, and a
waiter waits for the batch ids it saw.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from ._batching import Batch
from ._retry import Outcome


@dataclasses.dataclass(frozen=True)
class Loss:
    """``events`` dropped for ``reason``; ``last`` is the answer that decided it."""

    events: int
    reason: str
    last: Outcome


@dataclasses.dataclass
class _Open:
    batch: Batch
    pending: int
    losses: list[Loss]


class Splits:
    """The halves of split batches, each waiting for its sibling.

    Invariant: a batch id is a key of ``_parent_of`` exactly while it is a half
    whose parent is open; an open parent has 1 or 2 halves not yet settled.
    """

    def __init__(self) -> None:
        self._parent_of: dict[int, Batch] = {}
        self._open: dict[int, _Open] = {}

    def __len__(self) -> int:
        """Split batches not yet settled (the handed-over one and any split part)."""
        return len(self._open)

    def split(self, batch: Batch) -> tuple[Batch, Batch]:
        """Two halves of ``batch`` (at least two events), oldest events first."""
        if len(batch) < 2:
            raise ValueError(f"{batch!r} has fewer than two events to split")
        middle = len(batch) // 2
        halves = (
            Batch(batch.endpoint, batch.events[:middle], route=batch.route),
            Batch(batch.endpoint, batch.events[middle:], route=batch.route),
        )
        self._open[batch.id] = _Open(batch, 2, [])
        for half in halves:
            self._parent_of[half.id] = batch
        return halves

    def sift(self, batch: Batch, outcome: Outcome) -> Optional[Batch]:
        """The part of ``batch`` worth sending again after ``outcome`` refused it.

        None when every event is a JSON object, or none is: then the refusal
        stands for the whole batch, dropped under the refusal's reason.
        """
        good = [event for event in batch.events if _is_json_object(event)]
        if len(good) == len(batch) or not good:
            return None
        part = Batch(batch.endpoint, good, route=batch.route)
        loss = Loss(len(batch) - len(good), "bad_message", outcome)
        self._open[batch.id] = _Open(batch, 1, [loss])
        self._parent_of[part.id] = batch
        return part

    def settle(
        self, batch: Batch, losses: tuple[Loss, ...]
    ) -> Optional[tuple[Batch, tuple[Loss, ...]]]:
        """Record that ``batch`` is settled with ``losses``.

        Returns the batch that was handed over and everything lost from it once
        all its parts are settled (``batch`` itself when it was never split);
        None while a part is still on its way.
        """
        while True:
            parent = self._parent_of.pop(batch.id, None)
            if parent is None:
                return batch, losses
            entry = self._open[parent.id]
            entry.losses.extend(losses)
            entry.pending -= 1
            if entry.pending:
                return None
            del self._open[parent.id]
            batch, losses = parent, tuple(entry.losses)


def _is_json_object(event: bytes) -> bool:
    try:
        return isinstance(json.loads(event), dict)
    except ValueError:  # not JSON, or not UTF-8
        return False
