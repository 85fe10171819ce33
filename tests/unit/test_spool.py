"""The disk spool (``_spool``): round trips, restarts, damage, bounds, refusals, fsync.

Everything runs in this process on ``tmp_path``. The lock against another
process (and its release when that process is SIGKILLed) is in
``tests/process/test_spool_lock.py``; here a second open of the same
directory stands for it (``flock`` locks belong to open file descriptions).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional

import pytest

from trubrics_mp._spool import Hooks, Ref, Spool, SpoolUnavailable, route_tag
from trubrics_mp._spool_format import (
    MAGIC,
    ack_name,
    encode_record,
    parse_segment,
    segment_name,
    seq_of,
)

EP, LLM = "publish_events", "publish_llm_events"
TAG = route_tag("http://collector", "key-1")


def events(first: int, count: int) -> list[bytes]:
    return [b'{"n":%d}' % n for n in range(first, first + count)]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_spool(path: Path, **kwargs: object) -> Spool:
    return Spool.open(str(path), **kwargs)  # type: ignore[arg-type]


def replayed(spool: Spool) -> list[bytes]:
    return [event for pending in spool.replay() for event in pending.events]


def test_appended_events_are_replayed_in_order_with_their_header_after_a_reopen(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with open_spool(tmp_path / "s", clock=clock) as spool:
        first = spool.append(EP, TAG, events(0, 3))
        clock.now += 5
        second = spool.append(LLM, "other", events(3, 2))
        assert first.ok and second.ok and first.reason == ""
        assert list(spool.replay()) == []  # replay covers what was on disk at open
    with open_spool(tmp_path / "s", clock=clock) as spool:
        pending = list(spool.replay())
    assert [(p.endpoint, p.route, p.created, p.events) for p in pending] == [
        (EP, TAG, 1000.0, events(0, 3)),
        (LLM, "other", 1005.0, events(3, 2)),
    ]
    assert [p.ref for p in pending] == [first.ref, second.ref]


def test_a_reopened_spool_replays_only_what_was_not_acknowledged(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        refs = [spool.append(EP, TAG, events(10 * i, 10)).ref for i in range(3)]
        assert all(refs)
        a, b, c = (ref for ref in refs if ref is not None)
        # a batch of part of one record, and one of several records
        assert spool.ack([a.part(2, 5)]) == 3
        assert spool.ack([a.part(0, 2), b, c.part(0, 4), a.part(2, 5)]) == 2 + 10 + 4
    with open_spool(tmp_path) as spool:
        pending = list(spool.replay())
        assert [p.events for p in pending] == [events(5, 5), events(24, 6)]
        assert [p.ref for p in pending] == [Ref(a.segment, a.offset, 5, 10), c.part(4, 10)]
        assert spool.stats().events == 11
        assert spool.ack([pending[0].ref]) == 5  # acks of a replayed segment survive too
    with open_spool(tmp_path) as spool:
        assert replayed(spool) == events(24, 6)


def test_events_acknowledged_during_a_replay_are_not_yielded_again(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        refs = [spool.append(EP, TAG, events(i, 1)).ref for i in range(3)]
    with open_spool(tmp_path) as spool:
        seen = []
        for pending in spool.replay():
            seen.append(pending.events)
            spool.ack([r for r in refs if r is not None])
        assert seen == [events(0, 1)]
        assert spool.stats().events == 0


def test_a_segment_all_acknowledged_is_deleted_once_rolled(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=100) as spool:
        refs = [spool.append(EP, TAG, events(10 * i, 10)).ref for i in range(3)]
        stats = spool.stats()
        assert stats.segments == 3 and stats.events == 30  # each record passed 100 bytes
        assert spool.ack([r for r in refs[:2] if r is not None]) == 20
        assert sorted(os.listdir(tmp_path)) == [segment_name(3), "lock"]
        assert spool.stats().bytes == os.path.getsize(tmp_path / segment_name(3))
        assert spool.ack([r for r in refs[2:] if r is not None]) == 10
        assert spool.stats().bytes == 0 and spool.stats().segments == 0
    assert os.listdir(tmp_path) == ["lock"]


def test_the_segment_being_appended_to_stays_until_close_when_all_acknowledged(
    tmp_path: Path,
) -> None:
    with open_spool(tmp_path) as spool:
        ref = spool.append(EP, TAG, events(0, 2)).ref
        assert ref is not None and spool.ack([ref]) == 2
        assert segment_name(1) in os.listdir(tmp_path)
        again = spool.append(EP, TAG, events(2, 1)).ref
        assert again is not None and again.segment == 1
        assert spool.ack([again]) == 1
    assert os.listdir(tmp_path) == ["lock"]


def test_a_new_holder_appends_to_a_new_segment_and_numbers_are_never_reused(
    tmp_path: Path,
) -> None:
    with open_spool(tmp_path) as spool:
        spool.append(EP, TAG, events(0, 1))
    (tmp_path / ack_name(7)).write_bytes(b"")  # acks left by a segment deleted before them
    with open_spool(tmp_path) as spool:
        assert not (tmp_path / ack_name(7)).exists()
        ref = spool.append(EP, TAG, events(1, 1)).ref
        assert ref is not None and ref.segment == 8
        assert replayed(spool) == events(0, 1)


def three_records(path: Path) -> tuple[bytes, list[int]]:
    """A spool of three records (closed); the segment's bytes and each record's offset."""
    with open_spool(path, fsync_every_s=None) as spool:
        refs = [spool.append(EP, TAG, events(5 * i, 5)).ref for i in range(3)]
    data = (path / segment_name(1)).read_bytes()
    return data, [ref.offset for ref in refs if ref is not None]


def test_a_torn_tail_costs_only_the_last_record_whatever_the_byte_it_ends_at(
    tmp_path: Path,
) -> None:
    data, offsets = three_records(tmp_path)
    last = offsets[2]
    for cut in range(last, len(data)):
        (tmp_path / segment_name(1)).write_bytes(data[:cut])
        with open_spool(tmp_path, fsync_every_s=None) as spool:
            assert replayed(spool) == events(0, 10), cut
            stats = spool.stats()
            assert (stats.skipped_records, stats.skipped_bytes) == (
                (1, cut - last) if cut > last else (0, 0)
            ), cut
            assert stats.events == 10


def test_a_flipped_byte_in_the_middle_costs_only_that_record(tmp_path: Path) -> None:
    data, offsets = three_records(tmp_path)
    middle = range(offsets[1], offsets[2])
    for at in middle:
        spoiled = bytearray(data)
        spoiled[at] ^= 0x40
        (tmp_path / segment_name(1)).write_bytes(bytes(spoiled))
        with open_spool(tmp_path, fsync_every_s=None) as spool:
            assert replayed(spool) == events(0, 5) + events(10, 5), at
            stats = spool.stats()
            assert (stats.skipped_records, stats.skipped_bytes) == (1, len(middle)), at


def test_garbage_between_records_is_skipped_up_to_the_next_intact_magic() -> None:
    one, two = (encode_record(EP, TAG, 0.0, events(i, 2)) for i in (0, 2))
    data = one + MAGIC + b"\x00" * 9 + MAGIC + b"junk" + two
    parsed = parse_segment(data)
    assert [r.events(data) for r in parsed.records] == [events(0, 2), events(2, 2)]
    assert (parsed.skipped_records, parsed.skipped_bytes) == (2, 8 + 9 + 4)


def test_a_torn_or_spoiled_ack_entry_only_sends_its_events_again(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        refs = [spool.append(EP, TAG, events(i, 1)).ref for i in range(4)]
        a, b, c, d = (r for r in refs if r is not None)
        spool.ack([a])
        spool.ack([b])
    acks = tmp_path / ack_name(1)
    entries = acks.read_bytes()
    assert len(entries) == 40
    acks.write_bytes(entries[:20] + bytes([entries[20] ^ 1]) + entries[21:] + b"\x01\x02\x03")
    with open_spool(tmp_path) as spool:
        assert replayed(spool) == events(1, 3)  # b's entry failed its CRC, the torn one ignored
        assert spool.stats().skipped_acks == 2
        assert spool.ack([c]) == 1  # appended after the torn entry was cut off
    with open_spool(tmp_path) as spool:
        assert replayed(spool) == [events(1, 1)[0], events(3, 1)[0]]
        assert d is not None


def test_the_bound_refuses_the_newest_records_and_counts_them(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=1000, segment_bytes=300) as spool:
        results = [spool.append(EP, TAG, events(10 * i, 10)) for i in range(10)]
        taken = [r for r in results if r.ok]
        refused = [r for r in results if not r.ok]
        assert taken and refused and results[: len(taken)] == taken
        assert {r.reason for r in refused} == {"spool_full"}
        stats = spool.stats()
        assert stats.bytes <= 1000 and stats.refused == {"spool_full": 10 * len(refused)}
        assert stats.events == 10 * len(taken)
        assert spool.append(EP, TAG, [b"x" * 2000]).reason == "too_large"
        spool.ack([r.ref for r in taken if r.ref is not None])  # rolled segments go
        assert spool.append(EP, TAG, events(0, 10)).ok


class ScriptedWrite:
    """``os.write`` whose next calls follow a script: ``n`` writes n bytes, ``-e`` fails."""

    def __init__(self) -> None:
        self.script: list[int] = []

    def __call__(self, fd: int, data: memoryview) -> int:
        if not self.script:
            return os.write(fd, data)
        step = self.script.pop(0)
        if step < 0:
            raise OSError(-step, os.strerror(-step))
        return os.write(fd, data[:step])


@pytest.mark.parametrize(("err", "reason"), [(errno.ENOSPC, "disk_full"), (errno.EIO, "io_error")])
def test_a_failed_write_is_cut_back_reported_and_the_spool_goes_on(
    tmp_path: Path, err: int, reason: str
) -> None:
    write = ScriptedWrite()
    with open_spool(tmp_path, hooks=Hooks(write=write)) as spool:
        assert spool.append(EP, TAG, events(0, 2)).ok
        size = os.path.getsize(tmp_path / segment_name(1))
        write.script = [7, -err]  # a short write, then the failure
        result = spool.append(EP, TAG, events(2, 2))
        assert (result.ok, result.reason) == (False, reason)
        assert write.script == []
        assert os.path.getsize(tmp_path / segment_name(1)) == size
        assert spool.stats().refused == {reason: 2}
        assert spool.append(EP, TAG, events(4, 2)).ok
    with open_spool(tmp_path) as spool:
        assert replayed(spool) == events(0, 2) + events(4, 2)
        assert spool.stats().skipped_bytes == 0


def test_a_full_disk_on_a_new_segment_and_on_an_ack_is_reported_not_raised(
    tmp_path: Path,
) -> None:
    write = ScriptedWrite()
    with open_spool(tmp_path, segment_bytes=10, hooks=Hooks(write=write)) as spool:
        ref = spool.append(EP, TAG, events(0, 2)).ref  # rolls: the next append opens one
        assert ref is not None
        write.script = [-errno.ENOSPC]
        assert spool.ack([ref.part(0, 1)]) == 1  # in memory at least
        assert spool.stats().ack_write_failures == 1
        assert os.path.getsize(tmp_path / ack_name(1)) == 0
        assert spool.append(EP, TAG, events(2, 1)).ok
    with open_spool(tmp_path) as spool:
        # the lost ack: a duplicate, never a loss
        assert replayed(spool) == events(0, 2) + events(2, 1)


def test_a_failed_fsync_under_sync_every_append_refuses_the_record(tmp_path: Path) -> None:
    fail = [False]

    def fsync(fd: int) -> None:
        if fail[0]:
            raise OSError(errno.EIO, "I/O error")

    with open_spool(tmp_path, fsync_every_s=0, hooks=Hooks(fsync=fsync)) as spool:
        assert spool.append(EP, TAG, events(0, 1)).ok
        fail[0] = True
        assert spool.append(EP, TAG, events(1, 1)).reason == "io_error"
        fail[0] = False
        assert spool.append(EP, TAG, events(2, 1)).ok
        assert spool.stats().sync_failures == 1
    with open_spool(tmp_path) as spool:
        assert replayed(spool) == events(0, 1) + events(2, 1)


class Fsyncs:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fd: int) -> None:
        self.count += 1


@pytest.mark.parametrize(("every_s", "expected"), [(None, 0), (0.0, 3 + 1)])
def test_never_syncs_nothing_and_every_append_syncs_each_one(
    tmp_path: Path, every_s: Optional[float], expected: int
) -> None:
    fsyncs = Fsyncs()
    with open_spool(tmp_path, fsync_every_s=every_s, hooks=Hooks(fsync=fsyncs)) as spool:
        for i in range(3):
            spool.append(EP, TAG, events(i, 1))
        assert spool.sync_due_in() is None
    assert fsyncs.count == expected  # every append syncs its record, plus the new directory entry


def test_an_interval_syncs_at_most_that_often_and_says_when_it_is_due(tmp_path: Path) -> None:
    fsyncs, now = Fsyncs(), [0.0]
    hooks = Hooks(fsync=fsyncs, monotonic=lambda: now[0])
    with open_spool(tmp_path, fsync_every_s=0.05, hooks=hooks) as spool:
        spool.append(EP, TAG, events(0, 1))
        after_open = fsyncs.count  # the directory entry of the new segment
        now[0] = 0.03
        spool.append(EP, TAG, events(1, 1))
        assert fsyncs.count == after_open and spool.sync_due_in() == pytest.approx(0.02)
        spool.sync_if_due()
        assert fsyncs.count == after_open
        now[0] = 0.05
        assert spool.sync_due_in() == 0.0
        spool.sync_if_due()
        assert fsyncs.count == after_open + 1 and spool.sync_due_in() is None
        now[0] = 0.2
        spool.append(EP, TAG, events(2, 1))  # the last sync is old: this write syncs at once
        assert fsyncs.count == after_open + 2


def test_stats_count_events_bytes_and_the_age_of_the_oldest_unacknowledged(
    tmp_path: Path,
) -> None:
    clock = Clock(100.0)
    with open_spool(tmp_path, clock=clock) as spool:
        assert spool.stats().oldest_age_s is None
        first = spool.append(EP, TAG, events(0, 2)).ref
        clock.now = 130.0
        spool.append(EP, TAG, events(2, 3))
        clock.now = 160.0
        stats = spool.stats()
        assert (stats.events, stats.segments, stats.oldest_age_s) == (5, 1, 60.0)
        assert stats.bytes == os.path.getsize(tmp_path / segment_name(1))
        assert first is not None and spool.ack([first])
        assert spool.stats().oldest_age_s == 30.0
        assert spool.stats().acked_events == 2 and spool.stats().appended_events == 5


def test_purge_reports_what_it_removed_and_old_refs_become_harmless(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=100) as spool:
        refs = [spool.append(EP, TAG, events(10 * i, 10)).ref for i in range(3)]
        on_disk = sum(
            os.path.getsize(tmp_path / name)
            for name in os.listdir(tmp_path)
            if seq_of(name) is not None
        )
        assert spool.purge() == (30, on_disk)
        assert os.listdir(tmp_path) == ["lock"]
        assert spool.ack([r for r in refs if r is not None]) == 0
        assert spool.stats().events == 0 and spool.stats().bytes == 0
        again = spool.append(EP, TAG, events(0, 1)).ref
        assert again is not None and again.segment == 4
    with open_spool(tmp_path) as spool:
        assert replayed(spool) == events(0, 1)


def test_a_closed_spool_refuses_appends_and_ignores_acks(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    ref = spool.append(EP, TAG, events(0, 1)).ref
    spool.close()
    spool.close()
    assert spool.append(EP, TAG, events(1, 1)).reason == "closed"
    assert ref is not None and spool.ack([ref]) == 0


# -- opening: the directory's checks and its lock --------------------------------------


def refusal(path: Path, **kwargs: object) -> SpoolUnavailable:
    with pytest.raises(SpoolUnavailable) as caught:
        open_spool(path, **kwargs)
    return caught.value


def test_a_missing_directory_is_made_private(tmp_path: Path) -> None:
    with open_spool(tmp_path / "a" / "spool"):
        pass
    assert (tmp_path / "a" / "spool").stat().st_mode & 0o777 == 0o700


def test_a_file_is_not_a_spool_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert refusal(tmp_path / "f").reason == "not_a_directory"
    assert refusal(tmp_path / "f" / "below").reason in ("not_a_directory", "os_error")


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    error = refusal(tmp_path, hooks=Hooks(geteuid=lambda: os.geteuid() + 1))
    assert error.reason == "foreign_owner"
    assert f"owned by uid {os.geteuid()}" in str(error)


def test_a_directory_chowned_to_another_uid_is_refused_when_root_can_chown(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can chown; the injected euid above covers the check")
    os.chown(tmp_path, 4242, -1)
    assert refusal(tmp_path).reason == "foreign_owner"


def test_a_directory_others_may_write_to_is_refused(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    assert refusal(tmp_path).reason == "open_to_others"


def test_a_directory_this_process_cannot_write_to_is_refused(tmp_path: Path) -> None:
    error = refusal(tmp_path, hooks=Hooks(writable=lambda path: False))
    assert error.reason == "read_only" and "cannot write" in str(error)


class ReadOnlyMount:
    f_flag = os.ST_RDONLY


@pytest.mark.parametrize("denied", ["access", "mount"])
def test_the_default_probe_asks_the_kernel_about_permissions_and_the_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, denied: str
) -> None:
    """As root, chmod stops no write: the probe's two sources are made to say no."""
    if denied == "access":
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    else:
        monkeypatch.setattr(os, "statvfs", lambda path: ReadOnlyMount())
    assert refusal(tmp_path).reason == "read_only"
    monkeypatch.undo()
    with open_spool(tmp_path):
        pass


def test_a_read_only_directory_is_refused_when_modes_apply(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes whatever the mode; the probe tests above cover root")
    os.chmod(tmp_path, 0o500)
    try:
        assert refusal(tmp_path).reason == "read_only"
    finally:
        os.chmod(tmp_path, 0o700)


def test_a_spool_open_elsewhere_is_busy_until_closed(tmp_path: Path) -> None:
    first = open_spool(tmp_path)
    error = refusal(tmp_path)
    assert error.reason == "busy" and f"process {os.getpid()}" in str(error)
    first.close()
    with open_spool(tmp_path):
        pass


def test_routes_are_tagged_with_a_key_id_never_the_key() -> None:
    tag = route_tag("https://app.trubrics.com/api/ingestion", "sk-secret-key")
    assert "sk-secret" not in tag and tag.startswith("https://app.trubrics.com/api/ingestion ")
    assert tag != route_tag("https://app.trubrics.com/api/ingestion", "another-key")


def test_only_spool_file_names_have_a_sequence() -> None:
    assert seq_of(segment_name(12)) == 12 and seq_of(ack_name(3)) == 3
    for name in ("lock", "12.seg", "000000000000001x.seg", "0000000000000001.tmp", "x"):
        assert seq_of(name) is None


def test_appended_events_are_read_back_by_ref_and_a_spoiled_one_reads_as_none(
    tmp_path: Path,
) -> None:
    with open_spool(tmp_path / "s") as spool:
        first = spool.append(EP, TAG, events(0, 4)).ref
        second = spool.append(EP, TAG, events(4, 2)).ref
        assert first is not None and second is not None
        assert spool.read([second, first.part(1, 3)]) == [events(4, 2), events(1, 2)]
        path = tmp_path / "s" / segment_name(first.segment)
        data = bytearray(path.read_bytes())
        data[first.offset + 30] ^= 0xFF  # a flipped byte inside the first record
        path.write_bytes(bytes(data))
        assert spool.read([first, second]) == [None, events(4, 2)]
