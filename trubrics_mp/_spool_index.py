"""The spool's index in memory: what each segment holds and what is acknowledged.

Built by reading a directory back (:func:`scan`: every segment parsed, its
acknowledgements applied, damage counted), then kept up to date by the
spool. Per record it keeps the event count, the creation time and, once any
of its events is acknowledged, one byte per event (a 256 MiB spool of
400-byte events: about 0.7 MB); never the events themselves, which
``replay`` reads back from disk.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable
from typing import Callable, Optional

from ._spool_dir import MISSING, SpoolUnavailable, is_locked
from ._spool_format import ACK, ack_name, parse_acks, parse_segment, segment_name, seq_of
from ._spool_io import failure_reason, read_file, unlink


@dataclasses.dataclass(frozen=True)
class Ref:
    """Events ``[start, stop)`` of the record at ``offset`` of segment ``segment``."""

    segment: int
    offset: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def part(self, first: int, last: int) -> Ref:
        """The ref of this ref's events ``[first, last)`` (counted from its own start)."""
        if not 0 <= first < last <= len(self):
            raise ValueError(f"part [{first}, {last}) is outside a ref of {len(self)} events")
        return Ref(self.segment, self.offset, self.start + first, self.start + last)


@dataclasses.dataclass(frozen=True)
class Appended:
    """What ``append`` did: ``ref`` when the events are on disk, else ``reason``."""

    ref: Optional[Ref]
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.ref is not None


@dataclasses.dataclass(frozen=True)
class Pending:
    """Unacknowledged events found on disk: deliver them, then ``ack(ref)``."""

    ref: Ref
    endpoint: str
    route: str
    created: float
    events: list[bytes]


@dataclasses.dataclass(frozen=True)
class SpoolStats:
    """The spool at one moment; ``refused`` maps a reason to the events it refused."""

    events: int
    bytes: int
    segments: int
    oldest_age_s: Optional[float]
    skipped_records: int
    skipped_bytes: int
    skipped_acks: int
    appended_events: int = 0
    acked_events: int = 0
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    ack_write_failures: int = 0
    sync_failures: int = 0


class Rec:
    """One record's bookkeeping: its event count, creation time, acknowledged events."""

    __slots__ = ("count", "created", "acked", "unacked")

    def __init__(self, count: int, created: float) -> None:
        self.count = count
        self.created = created
        self.acked: Optional[bytearray] = None  # one byte per event once any is acked
        self.unacked = count

    def mark(self, start: int, stop: int) -> int:
        """Mark events ``[start, stop)`` delivered; how many were not already."""
        if self.acked is None:
            self.acked = bytearray(self.count)
        newly = (stop - start) - self.acked.count(1, start, stop)
        if newly:
            self.acked[start:stop] = b"\x01" * (stop - start)
            self.unacked -= newly
        return newly

    def unacked_runs(self) -> list[tuple[int, int]]:
        """The ``(start, stop)`` runs of events not acknowledged, in order."""
        if self.acked is None:
            return [(0, self.count)]
        runs, at = [], 0
        while at < self.count:
            start = self.acked.find(0, at)
            if start < 0:
                break
            stop = self.acked.find(1, start)
            stop = self.count if stop < 0 else stop
            runs.append((start, stop))
            at = stop
        return runs


@dataclasses.dataclass
class Segment:
    """A segment in the index; ``fd`` is open only while it is appended to."""

    seq: int
    records: dict[int, Rec] = dataclasses.field(default_factory=dict)
    size: int = 0
    ack_size: int = 0
    unacked: int = 0
    fd: int = -1
    ack_fd: int = -1
    old: bool = False  # written by an earlier holder of the lock: replay() covers it


@dataclasses.dataclass
class Damage:
    """What reading a spool back skipped."""

    records: int = 0
    bytes: int = 0
    acks: int = 0


Tags = list[tuple[str, int]]  # a route tag and the record's event count, per record


def load(directory: str, seq: int, damage: Damage, tags: Tags) -> Segment:
    """Segment ``seq`` as found on disk, its acknowledgements applied, damage counted;
    each record's route tag appended to ``tags``."""
    segment = Segment(seq, old=True)
    data = read_file(os.path.join(directory, segment_name(seq))) or b""
    parsed = parse_segment(data)
    damage.records += parsed.skipped_records
    damage.bytes += parsed.skipped_bytes
    for record in parsed.records:
        segment.records[record.offset] = Rec(record.count, record.created)
        tags.append((record.route, record.count))
    segment.size = len(data)
    segment.unacked = sum(rec.unacked for rec in segment.records.values())
    acks = read_file(os.path.join(directory, ack_name(seq))) or b""
    entries, bad = parse_acks(acks)
    damage.acks += bad
    segment.ack_size = len(acks)
    for offset, start, stop in entries:
        rec = segment.records.get(offset)
        if rec is not None and stop <= rec.count:
            segment.unacked -= rec.mark(start, stop)
    return segment


def scan(directory: str, tags: Optional[Tags] = None) -> tuple[dict[int, Segment], Damage, int]:
    """Every segment of ``directory`` by sequence, damage, and the next free sequence
    (the route tag of every record, acknowledged or not, appended to ``tags``)."""
    seqs = sorted({seq for seq in map(seq_of, os.listdir(directory)) if seq is not None})
    damage = Damage()
    segments: dict[int, Segment] = {}
    tags = [] if tags is None else tags
    for seq in seqs:
        if os.path.exists(os.path.join(directory, segment_name(seq))):
            segments[seq] = load(directory, seq, damage, tags)
        else:  # a segment deleted before its acks: nothing to acknowledge any more
            unlink(os.path.join(directory, ack_name(seq)))
    return segments, damage, (seqs[-1] + 1 if seqs else 1)


def oldest(segments: Iterable[Segment]) -> Optional[float]:
    for segment in segments:
        if segment.unacked:
            return next(rec.created for rec in segment.records.values() if rec.unacked)
    return None


def open_acks(path: str, segment: Segment) -> str:
    """Open the segment's ack file for appending, cut back to whole entries; ``""`` or why not.

    A torn entry at its end (a crash in an ack write) is cut off, so that the
    entries appended after it stay aligned.
    """
    if segment.ack_fd >= 0:
        return ""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:
        segment.ack_fd = os.open(path, flags, 0o600)
        whole = segment.ack_size - segment.ack_size % ACK.size
        if whole != segment.ack_size:
            os.ftruncate(segment.ack_fd, whole)
            segment.ack_size = whole
    except OSError as exc:
        return failure_reason(exc)
    return ""


def inspect(directory: str, clock: Callable[[], float] = time.time) -> tuple[SpoolStats, bool]:
    """A spool's stats read without taking its lock, and whether a live process holds it.

    While a flusher appends, the record it is writing may be counted as torn.
    """
    if not os.path.isdir(directory):
        raise SpoolUnavailable(MISSING, directory, "no such directory")
    segments, damage, _ = scan(directory)
    first = oldest(segments.values())
    stats = SpoolStats(
        events=sum(s.unacked for s in segments.values()),
        bytes=sum(s.size + s.ack_size for s in segments.values()),
        segments=len(segments),
        oldest_age_s=None if first is None else max(0.0, clock() - first),
        skipped_records=damage.records,
        skipped_bytes=damage.bytes,
        skipped_acks=damage.acks,
    )
    return stats, is_locked(directory)
