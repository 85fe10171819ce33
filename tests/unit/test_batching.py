"""Batching: when a batch leaves, and endpoints never mixed."""

from __future__ import annotations

from trubrics_mp._batching import Batcher, Intake
from trubrics_mp._spool import Ref


def test_a_batch_leaves_when_flush_at_events_are_there() -> None:
    batcher = Batcher(flush_at=3, flush_interval_s=10)
    assert batcher.add("publish_events", b"1", now=0.0) is None
    assert batcher.add("publish_events", b"2", now=0.1) is None
    batch = batcher.add("publish_events", b"3", now=0.2)
    assert batch is not None and batch.body() == b"[1,2,3]"
    assert len(batcher) == 0


def test_a_batch_leaves_when_its_oldest_event_is_flush_interval_old() -> None:
    batcher = Batcher(flush_at=100, flush_interval_s=10)
    batcher.add("publish_events", b"1", now=5.0)
    batcher.add("publish_llm_events", b"2", now=7.0)
    assert batcher.next_due_at() == 15.0
    assert batcher.due(now=14.9) == []
    (due,) = batcher.due(now=15.0)
    assert due.endpoint == "publish_events"
    assert batcher.next_due_at() == 17.0


def test_endpoints_are_never_mixed_and_cut_all_takes_everything() -> None:
    batcher = Batcher(flush_at=100, flush_interval_s=10)
    batcher.add("publish_events", b"1", now=0)
    batcher.add("publish_llm_events", b"2", now=0)
    batches = batcher.cut_all()
    assert sorted((b.endpoint, b.events) for b in batches) == [
        ("publish_events", [b"1"]),
        ("publish_llm_events", [b"2"]),
    ]
    assert batcher.cut_all() == [] and batcher.next_due_at() is None


def test_many_events_at_once_fill_batches_in_order_and_keep_the_rest_waiting() -> None:
    intake = Intake(flush_at=4, flush_interval_s=10.0, max_bytes=1_000)
    events = [b'{"n":%d}' % n for n in range(10)]
    full = intake.add_many("publish_events", events, sum(map(len, events)), now=0.0)
    assert [batch.events for batch in full] == [events[0:4], events[4:8]]
    assert [b.nbytes for b in full] == [sum(map(len, events[0:4])), sum(map(len, events[4:8]))]
    assert intake.held == 10 and intake.held_bytes == sum(map(len, events))
    (rest,) = intake.cut_all()
    assert rest.events == events[8:] and rest.nbytes == sum(map(len, events[8:]))


def test_many_events_top_up_a_waiting_batch_first() -> None:
    intake = Intake(flush_at=3, flush_interval_s=10.0, max_bytes=1_000)
    assert intake.add("publish_events", b"{0}", now=0.0) is None
    full = intake.add_many("publish_events", [b"{1}", b"{2}", b"{3}"], 9, now=1.0)
    assert [batch.events for batch in full] == [[b"{0}", b"{1}", b"{2}"]]
    assert intake.next_due_at() == 11.0  # the rest waits from now, in a batch of its own


def test_events_in_the_spool_carry_their_ref_into_each_batch_they_fill() -> None:
    intake = Intake(flush_at=5, flush_interval_s=10.0, max_bytes=10_000)
    ref = Ref(segment=3, offset=128, start=0, stop=7)
    (full,) = intake.add_many("publish_events", [b"{}"] * 7, 14, now=0.0, ref=ref)
    assert full.refs == [Ref(3, 128, 0, 5)]
    assert intake.add_many("publish_events", [b"{}"] * 2, 4, now=0.0) == []  # memory only
    (rest,) = intake.cut_all()
    assert rest.refs == [Ref(3, 128, 5, 7)] and len(rest) == 4
    assert (intake.held, intake.held_on_disk) == (9, 7)
    intake.settled(full)
    intake.settled(rest)
    assert (intake.held, intake.held_on_disk) == (0, 0)
