"""Counters: kept per process by the client, pipeline-wide by the flusher."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Optional, Protocol

MAX_GONE_PIDS = 1024


class _DeliveryCounts(Protocol):
    requests: int
    retried_requests: int


@dataclasses.dataclass
class FlusherCounters:
    """What the flusher process counts; sent as JSON in reply to a stats request.

    ``generation`` is the flusher's own restart count: 0 for the first flusher
    of a pipeline, one more for each replacement, whichever process started it.
    """

    pid: int
    generation: int
    received: int = 0
    delivered: int = 0
    failed_batches: int = 0
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    received_by_pid: collections.Counter[int] = dataclasses.field(
        default_factory=collections.Counter
    )
    received_from_forgotten: int = 0  # events of processes gone long enough to be forgotten

    def __post_init__(self) -> None:
        self._gone: collections.deque[int] = collections.deque()

    def count_received(self, pid: int, events: int = 1) -> None:
        self.received += events
        self.received_by_pid[pid] += events

    def process_gone(self, pid: int) -> None:
        """``pid`` has no connection left: past ``MAX_GONE_PIDS`` gone, the oldest is
        forgotten (its count folded into ``received_from_forgotten``), so that a
        server recycling workers for months keeps a bounded state and reply."""
        if pid not in self.received_by_pid:
            return
        self._gone.append(pid)
        while len(self._gone) > MAX_GONE_PIDS:
            oldest = self._gone.popleft()
            self.received_from_forgotten += self.received_by_pid.pop(oldest, 0)

    def snapshot(
        self, held: int, delivery: Optional[_DeliveryCounts] = None, processes: int = 0
    ) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["dropped"] = dict(self.dropped)
        data["received_by_pid"] = {str(k): v for k, v in self.received_by_pid.items()}
        data["held"] = held
        data["processes"] = processes
        data["requests"] = 0 if delivery is None else delivery.requests
        data["retried_requests"] = 0 if delivery is None else delivery.retried_requests
        return data


@dataclasses.dataclass
class LocalCounters:
    """What one application process counts about its own ``track()`` calls."""

    tracked: int = 0
    queued: int = 0
    resent: int = 0  # sent again after a flusher died (with a spool)
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counters returned by ``Trubrics.stats()``.

    ``tracked``, ``queued`` (handed to the shared queue) and ``buffered``
    (waiting in this process for room in the queue) are this process's own;
    ``pipeline`` is the path of the flusher's socket (see the deployment docs:
    every process of the user on the machine with that path shares it), and
    ``processes`` the number of processes connected to it now. ``delivered``,
    ``requests``, ``retried_requests``, ``failed_batches``, ``held`` and
    ``received_by_pid`` (the processes connected and the last 1,024 gone;
    older ones add up in ``received_from_forgotten``) are the whole
    pipeline's, as the flusher counts them; they are None when the flusher was
    not asked or could not be.
    ``flusher_restarts`` is the flusher's own count of replacements (what this
    process last heard of it when the flusher was not asked). ``dropped`` adds
    both: reasons counted here (bad events, a full buffer) and in the flusher
    (a full queue, retries spent).
    ``spool`` is ``"off"``, ``"on"`` or ``"unavailable: <reason>"`` (see the
    configuration docs); with it on, ``spool_events`` and ``spool_bytes`` are
    what the disk holds now (events not yet acknowledged by the API, and the
    files' size) and ``spool_oldest_age_s`` the age of the oldest of them.
    ``resent`` (this process's) counts the events it sent again after a
    flusher died without confirming them on disk, and ``spool_resent_on_disk``
    those of them (from any process) that the spool already held, so dropped.
    """

    tracked: int
    queued: int
    buffered: int
    dropped: dict[str, int]
    flusher_restarts: int
    pipeline: str = ""
    flusher_pid: Optional[int] = None
    delivered: Optional[int] = None
    requests: Optional[int] = None
    retried_requests: Optional[int] = None
    failed_batches: Optional[int] = None
    held: Optional[int] = None
    received_by_pid: dict[int, int] = dataclasses.field(default_factory=dict)
    received_from_forgotten: Optional[int] = None
    processes: Optional[int] = None
    spool: Optional[str] = None
    spool_events: Optional[int] = None
    spool_bytes: Optional[int] = None
    spool_oldest_age_s: Optional[float] = None
    resent: int = 0
    spool_resent_on_disk: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def merge(
    local: LocalCounters,
    buffered: int,
    generation: int,
    pipeline: str,
    flusher: Optional[dict[str, Any]],
) -> Stats:
    """This process's counters and, when it answered, the flusher's."""
    dropped = collections.Counter(local.dropped)
    if flusher is None:
        return Stats(
            local.tracked,
            local.queued,
            buffered,
            dict(dropped),
            generation,
            pipeline,
            resent=local.resent,
        )
    dropped.update(flusher["dropped"])
    return Stats(
        tracked=local.tracked,
        queued=local.queued,
        buffered=buffered,
        dropped=dict(dropped),
        flusher_restarts=flusher["generation"],
        pipeline=pipeline,
        flusher_pid=flusher["pid"],
        delivered=flusher["delivered"],
        requests=flusher["requests"],
        retried_requests=flusher["retried_requests"],
        failed_batches=flusher["failed_batches"],
        held=flusher["held"],
        received_by_pid={int(k): v for k, v in flusher["received_by_pid"].items()},
        received_from_forgotten=flusher["received_from_forgotten"],
        processes=flusher["processes"],
        spool=flusher.get("spool"),
        spool_events=flusher.get("spool_events"),
        spool_bytes=flusher.get("spool_bytes"),
        spool_oldest_age_s=flusher.get("spool_oldest_age_s"),
        resent=local.resent,
        spool_resent_on_disk=flusher.get("spool_resent_on_disk"),
    )
