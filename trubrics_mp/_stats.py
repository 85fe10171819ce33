"""Counters: kept per process by the client, pipeline-wide by the flusher."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Optional


@dataclasses.dataclass
class FlusherCounters:
    """What the flusher process counts; sent as JSON in reply to a stats request."""

    pid: int
    generation: int
    received: int = 0
    delivered: int = 0
    requests: int = 0
    retried_requests: int = 0
    failed_batches: int = 0
    connections: int = 0
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    received_by_pid: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )

    def count_received(self, pid: int) -> None:
        self.received += 1
        self.received_by_pid[pid] += 1

    def drop(self, reason: str, count: int) -> None:
        self.dropped[reason] += count

    def snapshot(self, held: int) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["dropped"] = dict(self.dropped)
        data["received_by_pid"] = {str(k): v for k, v in self.received_by_pid.items()}
        data["held"] = held
        return data


@dataclasses.dataclass
class LocalCounters:
    """What one application process counts about its own ``track()`` calls."""

    tracked: int = 0
    queued: int = 0
    flusher_restarts: int = 0
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters returned by ``Trubrics.stats()``.

    ``tracked``, ``queued`` (handed to the shared queue), ``buffered`` (waiting
    in this process for room in the queue) and ``flusher_restarts`` are this
    process's own. ``delivered``, ``requests``, ``retried_requests``,
    ``failed_batches``, ``held`` and ``received_by_pid`` are the whole
    pipeline's, as the flusher counts them; they are None when the flusher
    could not be asked. ``dropped`` adds both: reasons counted here (bad
    events, a full buffer) and in the flusher (a full queue, retries spent).
    """

    tracked: int
    queued: int
    buffered: int
    dropped: dict[str, int]
    flusher_restarts: int
    flusher_pid: Optional[int] = None
    delivered: Optional[int] = None
    requests: Optional[int] = None
    retried_requests: Optional[int] = None
    failed_batches: Optional[int] = None
    held: Optional[int] = None
    received_by_pid: dict[int, int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def merge(local: LocalCounters, buffered: int, flusher: Optional[dict[str, Any]]) -> Stats:
    dropped = collections.Counter(local.dropped)
    if flusher is None:
        return Stats(local.tracked, local.queued, buffered, dict(dropped), local.flusher_restarts)
    dropped.update(flusher["dropped"])
    return Stats(
        tracked=local.tracked,
        queued=local.queued,
        buffered=buffered,
        dropped=dict(dropped),
        flusher_restarts=max(local.flusher_restarts, flusher["generation"]),
        flusher_pid=flusher["pid"],
        delivered=flusher["delivered"],
        requests=flusher["requests"],
        retried_requests=flusher["retried_requests"],
        failed_batches=flusher["failed_batches"],
        held=flusher["held"],
        received_by_pid={int(k): v for k, v in flusher["received_by_pid"].items()},
    )
