"""The disk spool: events on disk until the API has accepted them (issue 14).

Opt-in storage for the flusher; this module is the storage only (the flusher
does not use it yet). One directory holds one spool, used by one process at a
time (see ``_spool_dir``: the checks, the lock) and laid out as ``_spool_format``
describes: append-only segment files of CRC-framed records (one record = one
group of already-encoded events for one endpoint and route tag), and beside
each an append-only file of acknowledgements.

Design:

- ``append`` writes one record with one ``write(2)`` (looped if short) and
  returns a :class:`Ref`: ``(segment, offset, start, stop)``. A batch may hold
  part of a record (``ref.part``) or several records: ``ack`` takes any refs.
  A segment rolls past ``segment_bytes`` (4 MiB); a new holder of the lock
  never appends to an earlier holder's segments.
- ``ack`` appends ``(record offset, start, stop)`` entries to the segment's ack
  file. A segment whose events are all acknowledged is deleted (the one being
  appended to once it has rolled, or at ``close``). After a restart only the
  events not acknowledged are replayed: duplicates are limited to events whose
  ack entry was lost in a crash (a machine crash within the fsync interval;
  never a process crash) and to batches the API stored but whose answer was lost.
- ``replay`` yields, oldest first, the unacknowledged events of the segments
  that were on disk when the spool was opened, reading one segment at a time.
- Damage (a torn tail after a crash in a write, flipped bytes) costs only the
  records it touches: they are skipped and counted (``stats().skipped_*``),
  never raised.
- The bound, ``max_bytes`` (256 MiB by default, segment and ack files
  together), refuses the NEWEST: an append that would pass it returns
  ``Appended(ref=None, reason="spool_full")`` and is counted. The caller still
  holds those events (in memory), the spool stays append-only, and dropping
  the oldest would mean deleting whole segments (4 MiB of unrelated events at
  once). Acks are never refused: they may pass the bound by 20 bytes each.
  Acknowledged records still take room until their whole segment goes.
- A failed write (ENOSPC, EDQUOT, EIO, EFBIG) is cut back to where the record
  began (``ftruncate``) and returned as ``reason="disk_full"`` or ``"io_error"``:
  never raised, and the spool stays usable. If even the cut fails, the
  segment is closed and its tail is skipped as torn when read back.
- ``stats()``: events and bytes on disk, segments, the age of the oldest
  unacknowledged record (by the injected ``clock``), damage, counters.

fsync (``fsync_every_s``): ``None`` never, ``0`` after every append and ack
write, ``t > 0`` at most every ``t`` seconds: a write syncs when the last sync
is ``t`` old, and otherwise leaves the spool dirty for the next write or for
``sync_if_due()``, which the owner calls when ``sync_due_in()`` says. A process
crash (SIGKILL, OOM) never loses an appended record whatever the policy: a
record is in the page cache when ``append`` returns. A machine crash (power,
kernel) may lose what was written since the last sync: with the default, 0.05 s,
the appends of the last 50 ms or so (more if the owner calls ``sync_if_due``
late, or if the disk's own cache ignores flushes), and acks of that window
(those events are sent again). What remains on disk reads back: a torn
record is skipped, counted.
New segment files are made durable (the directory is synced) unless ``None``.

Measured by ``benchmarks/spool_fsync.py`` on the project's machine (2 shared
cores, ext4 on a virtual disk), 20,000 appends of 20 events of 400 bytes,
median of 3 runs (the fsyncs include a sync of each rolled segment and of
the directory for each new one)::

    policy                µs/append  appends/s  fsyncs  vs never
    never                      13.5     73,800       0     1.00
    every append              185.1      5,400  20,039     0.07
    at most every 10 ms        19.3     51,900     112     0.70
    at most every 50 ms        18.1     55,300      85     0.75
    at most every 200 ms       19.3     51,900      79     0.70

Syncing every append costs 14x (about 9 µs per event): refused as a
default. With an interval, what costs is writing the data to the disk at
all (the page cache no longer absorbs it), hardly how often: 10, 50 and
200 ms cost the same within noise. The default, 50 ms, keeps the window a
machine crash can cost short at 0.75x the throughput of never syncing.

Caveats: one thread only (the flusher's main loop); the route tag must not
hold a secret (``route_tag`` makes one from a host and a key id); a record
larger than the bound is refused as ``too_large``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Callable, Optional

from ._spool_dir import OS_ERROR, Hooks, SpoolUnavailable, prepare, take_lock
from ._spool_format import (
    ack_name,
    encode_ack,
    encode_record,
    parse_segment,
    record_at,
    route_tag,
    segment_name,
    seq_of,
)
from ._spool_index import (
    Appended,
    Pending,
    Rec,
    Ref,
    Segment,
    SpoolStats,
    Tags,
    inspect,
    oldest,
    open_acks,
    scan,
)
from ._spool_io import IO_ERROR, Syncer, failure_reason, read_file, unlink, write_all

__all__ = [
    "Appended",
    "Hooks",
    "Pending",
    "Ref",
    "Spool",
    "SpoolStats",
    "SpoolUnavailable",
    "inspect",
    "route_tag",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SEGMENT_BYTES = 4 * 1024 * 1024
DEFAULT_FSYNC_EVERY_S = 0.05
SPOOL_FULL, TOO_LARGE, CLOSED = "spool_full", "too_large", "closed"


class Spool:
    """An open spool directory, its lock held; make one with :meth:`Spool.open`."""

    def __init__(
        self,
        directory: str,
        lock_fd: int,
        max_bytes: int,
        *,
        segment_bytes: int,
        syncer: Syncer,
        clock: Callable[[], float],
        write: Callable[[int, memoryview], int],
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._sync = syncer
        self._clock = clock
        self._write = write
        self.tags_at_open: Tags = []  # every record's route tag and count (see _durable)
        self._segments, self._damage, self._next_seq = scan(directory, self.tags_at_open)
        self.before_delete: Callable[[], None] = lambda: None  # the owner's last word
        self._bytes = sum(s.size + s.ack_size for s in self._segments.values())
        self._current: Optional[Segment] = None
        self._appended = self._acked = self._ack_failures = 0
        self._refused: dict[str, int] = {}

    @classmethod
    def open(
        cls,
        directory: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        fsync_every_s: Optional[float] = DEFAULT_FSYNC_EVERY_S,
        segment_bytes: int = SEGMENT_BYTES,
        clock: Callable[[], float] = time.time,
        hooks: Optional[Hooks] = None,
    ) -> Spool:
        """Open (making it, mode 0700, if missing) and lock the spool in ``directory``.

        Raises :class:`SpoolUnavailable` (``reason``: see there) for a directory
        that cannot be used; what is on disk is read back, damage skipped and
        counted. ``ValueError`` for settings out of range.
        """
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        if fsync_every_s is not None and fsync_every_s < 0:
            raise ValueError("fsync_every_s is None (never), 0 (always) or a positive time")
        hooks = hooks or Hooks()
        directory = os.path.abspath(directory)
        prepare(directory, hooks)
        lock_fd = take_lock(directory)
        try:
            syncer = Syncer(fsync_every_s, hooks.fsync, hooks.monotonic)
            return cls(
                directory,
                lock_fd,
                max_bytes,
                segment_bytes=segment_bytes,
                syncer=syncer,
                clock=clock,
                write=hooks.write,
            )
        except OSError as exc:
            os.close(lock_fd)
            raise SpoolUnavailable(OS_ERROR, directory, f"cannot read it: {exc}") from exc

    @property
    def closed(self) -> bool:
        return self._lock_fd < 0

    def _path(self, seq: int, ack: bool = False) -> str:
        return os.path.join(self.directory, ack_name(seq) if ack else segment_name(seq))

    # -- appending ---------------------------------------------------------------------

    def append(self, endpoint: str, route: str, events: list[bytes]) -> Appended:
        """Write ``events`` (encoded JSON, at least one) as one record; never raises OSError.

        ``ValueError`` only for what no record can hold (no events, an endpoint
        of more than 255 bytes).
        """
        now = self._clock()
        record = encode_record(endpoint, route, now, events)
        failure = self._room_for(len(record))
        segment = None if failure else self._writable_segment()
        if segment is None:
            return self._refuse(failure or self._open_failure, len(events))
        offset = segment.size
        failure = write_all(self._write, segment.fd, record)
        if not failure and self._sync.each_write:
            failure = self._sync.now(segment.fd)
        if failure:
            self._cut_back(segment, offset)
            return self._refuse(failure, len(events))
        segment.size += len(record)
        segment.unacked += len(events)
        segment.records[offset] = Rec(len(events), now)
        self._bytes += len(record)
        self._appended += len(events)
        self._sync.wrote(segment.fd)
        if segment.size >= self._segment_bytes:
            self._roll()
        return Appended(Ref(segment.seq, offset, 0, len(events)))

    def has_room(self, size: int = 0) -> bool:
        """Whether an append of ``size`` bytes would be taken (by the bound)."""
        return self._room_for(size) == ""

    def _room_for(self, size: int) -> str:
        if self.closed:
            return CLOSED
        if size > self.max_bytes:
            return TOO_LARGE
        return SPOOL_FULL if self._bytes + size > self.max_bytes else ""

    def _refuse(self, reason: str, count: int) -> Appended:
        self._refused[reason] = self._refused.get(reason, 0) + count
        return Appended(None, reason)

    _open_failure = IO_ERROR

    def _writable_segment(self) -> Optional[Segment]:
        """The segment being appended to, a new one if none is (``None`` if that fails)."""
        if self._current is not None:
            return self._current
        seq = self._next_seq
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(self._path(seq), flags, 0o600)
        except OSError as exc:
            self._open_failure = failure_reason(exc)
            return None
        self._next_seq += 1
        self._current = self._segments[seq] = Segment(seq, fd=fd)
        self._sync.directory(self.directory)
        return self._current

    def _cut_back(self, segment: Segment, offset: int) -> None:
        """Remove a failed record's partial bytes; close the segment if that fails too."""
        try:
            os.ftruncate(segment.fd, offset)
        except OSError:
            try:
                grown = os.fstat(segment.fd).st_size - offset
            except OSError:
                grown = 0
            segment.size += grown  # a torn stretch, skipped when read back
            self._bytes += grown
            self._roll()

    def _roll(self) -> None:
        """Stop appending to the current segment (synced first, unless never)."""
        segment, self._current = self._current, None
        if segment is None:
            return
        if self._sync.forget(segment.fd):
            self._sync.now(segment.fd)
        os.close(segment.fd)
        segment.fd = -1
        self._drop_if_done(segment)

    # -- acknowledging -----------------------------------------------------------------

    def ack(self, refs: Iterable[Ref]) -> int:
        """Mark the events of ``refs`` delivered; how many were not already.

        Unknown refs (a purged or deleted segment) are ignored. Never raises
        OSError: a failed ack write only means those events are sent again
        after a restart (counted as ``ack_write_failures``).
        """
        if self.closed:
            return 0
        entries: dict[int, list[bytes]] = {}
        newly = 0
        for ref in refs:
            segment = self._segments.get(ref.segment)
            rec = None if segment is None else segment.records.get(ref.offset)
            if segment is None or rec is None or not 0 <= ref.start < ref.stop <= rec.count:
                continue
            marked = rec.mark(ref.start, ref.stop)
            if marked:
                segment.unacked -= marked
                newly += marked
                entry = encode_ack(ref.offset, ref.start, ref.stop)
                entries.setdefault(ref.segment, []).append(entry)
        for seq, lines in entries.items():
            self._write_acks(self._segments[seq], b"".join(lines))
        self._acked += newly
        return newly

    def _write_acks(self, segment: Segment, data: bytes) -> None:
        self._drop_if_done(segment)  # all acknowledged: the segment goes, no ack to write
        if segment.seq not in self._segments:
            return
        before = segment.ack_size
        failure = open_acks(self._path(segment.seq, ack=True), segment)
        self._bytes += segment.ack_size - before  # a torn entry cut off
        failure = failure or write_all(self._write, segment.ack_fd, data)
        if not failure and self._sync.each_write:
            failure = self._sync.now(segment.ack_fd)
        if failure:
            self._ack_failures += 1
            if segment.ack_fd >= 0:
                try:
                    os.ftruncate(segment.ack_fd, segment.ack_size)
                except OSError:
                    pass
            return
        segment.ack_size += len(data)
        self._bytes += len(data)
        self._sync.wrote(segment.ack_fd)

    def _drop_if_done(self, segment: Segment) -> None:
        """Delete a segment none of whose events waits (not the one appended to).

        ``before_delete`` runs first: the flusher tells the on-disk confirmations
        it owes, so that no process sends again an event that no spool remembers.
        """
        if segment.unacked or segment is self._current:
            return
        if segment.ack_fd >= 0:
            self._sync.forget(segment.ack_fd)
            os.close(segment.ack_fd)
            segment.ack_fd = -1
        self.before_delete()
        # The segment first: a crash in between leaves acks without a segment
        # (removed at the next open), never a segment without its acks.
        if unlink(self._path(segment.seq)):
            unlink(self._path(segment.seq, ack=True))
            self._bytes -= segment.size + segment.ack_size
            del self._segments[segment.seq]

    # -- syncing -----------------------------------------------------------------------

    def sync(self) -> bool:
        """fsync every file written since the last sync; False if one failed."""
        return self._sync.sync()

    def sync_due_in(self) -> Optional[float]:
        """Seconds until ``sync_if_due`` has work (0: now); ``None``: nothing to sync."""
        return self._sync.due_in()

    def sync_if_due(self) -> None:
        if self._sync.due_in() == 0.0:
            self._sync.sync()

    # -- reading back ------------------------------------------------------------------

    def replay(self) -> Iterator[Pending]:
        """The unacknowledged events of segments on disk at open, oldest first.

        Lazy: one segment is read at a time, and events acknowledged while
        iterating are not yielded. Each call starts over from what is
        unacknowledged then (events in flight are yielded again).
        """
        for seq in [seq for seq, segment in self._segments.items() if segment.old]:
            segment = self._segments.get(seq)
            data = read_file(self._path(seq)) if segment and segment.unacked else None
            if segment is None or data is None:
                continue
            for record in parse_segment(data).records:
                rec = segment.records.get(record.offset)
                for start, stop in rec.unacked_runs() if rec and rec.unacked else []:
                    ref = Ref(seq, record.offset, start, stop)
                    events = record.events(data, start, stop)
                    yield Pending(ref, record.endpoint, record.route, record.created, events)

    def read(self, refs: list[Ref]) -> list[Optional[list[bytes]]]:
        """The events of each of ``refs`` (appended by this spool), read back from
        disk, one read per segment; None for a ref whose record is gone or spoiled."""
        segments: dict[int, Optional[bytes]] = {}
        out: list[Optional[list[bytes]]] = []
        for ref in refs:
            if ref.segment not in segments:
                segments[ref.segment] = read_file(self._path(ref.segment))
            data = segments[ref.segment]
            record = None if data is None else record_at(data, ref.offset)
            if data is None or record is None or ref.stop > len(record.lengths):
                out.append(None)
            else:
                out.append(record.events(data, ref.start, ref.stop))
        return out

    def stats(self) -> SpoolStats:
        first = oldest(self._segments.values())
        return SpoolStats(
            events=sum(s.unacked for s in self._segments.values()),
            bytes=self._bytes,
            segments=len(self._segments),
            oldest_age_s=None if first is None else max(0.0, self._clock() - first),
            skipped_records=self._damage.records,
            skipped_bytes=self._damage.bytes,
            skipped_acks=self._damage.acks,
            appended_events=self._appended,
            acked_events=self._acked,
            refused=dict(self._refused),
            ack_write_failures=self._ack_failures,
            sync_failures=self._sync.failures,
        )

    # -- the end -----------------------------------------------------------------------

    def purge(self) -> tuple[int, int]:
        """Delete every segment and ack file; the events and bytes that were on disk."""
        events = sum(s.unacked for s in self._segments.values())
        removed = self._bytes
        self._close_files()
        for name in os.listdir(self.directory):
            if seq_of(name) is not None:
                unlink(os.path.join(self.directory, name))
        self._segments.clear()
        self._bytes = 0
        return events, removed

    def _close_files(self) -> None:
        self._current = None
        for segment in self._segments.values():
            for fd in (segment.fd, segment.ack_fd):
                if fd >= 0:
                    self._sync.forget(fd)
                    os.close(fd)
            segment.fd = segment.ack_fd = -1

    def close(self) -> None:
        """Sync (unless never), delete what is all acknowledged, release the lock."""
        if self.closed:
            return
        if self._sync.every_s is not None:
            self._sync.sync()
        self._roll()
        self._close_files()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
