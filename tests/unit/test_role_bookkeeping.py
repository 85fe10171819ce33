"""Pure roles: the wire format, waiters, the lifetime's phases, stats merging."""

from __future__ import annotations

import json

import pytest

from trubrics_mp import _protocol as proto
from trubrics_mp._lifetime import ENDING, LEAVING, SERVING, Lifetime
from trubrics_mp._stats import FlusherCounters, LocalCounters, merge
from trubrics_mp._waiters import Waiters


# -- protocol ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", [proto.FLUSH, proto.STATS])
def test_requests_round_trip(kind: bytes) -> None:
    assert proto.parse_request(proto.request(kind, 2**40)) == proto.Request(kind, 2**40)


@pytest.mark.parametrize(
    "message", [b"F", b"F1234567", b"Fx" * 9, b"E" + bytes(8), b"Q" + bytes(8), b""]
)
def test_malformed_requests_are_refused(message: bytes) -> None:
    with pytest.raises(proto.ProtocolError):
        proto.parse_request(message)


def test_replies_round_trip() -> None:
    ack = proto.parse_reply(proto.ack(7, True))
    assert (ack.kind, ack.request_id, ack.ok) == (proto.ACK, 7, True)
    assert proto.parse_reply(proto.ack(7, False)).ok is False
    stats = proto.parse_reply(proto.stats_reply(8, b'{"a":1}'))
    assert (stats.kind, stats.request_id, stats.body) == (proto.STATS, 8, b'{"a":1}')
    assert proto.hello_generation(proto.parse_reply(proto.hello(12, False))) == 12
    assert proto.settled_counts(proto.parse_reply(proto.confirmed(5, 1))) == (5, 1, None)
    assert proto.settled_counts(proto.parse_reply(proto.bye(0, 2))) == (0, 2, None)
    assert proto.settled_counts(proto.parse_reply(proto.record(b"x y"))) is None
    with pytest.raises(proto.ProtocolError):
        proto.parse_reply(b"A123")


# -- waiters -------------------------------------------------------------------------
def test_a_waiter_covers_the_batches_unsettled_when_it_came() -> None:
    waiters: Waiters[str] = Waiters()
    waiters.dispatched(1)
    waiters.add("first", 10, ok=True)
    waiters.dispatched(2)
    waiters.add("second", 11, ok=True)
    waiters.settled(1, ok=False)
    (first,) = waiters.answerable()
    assert (first.peer, first.request_id, first.ok) == ("first", 10, False)
    assert waiters.answerable() == [] and len(waiters) == 1
    waiters.settled(2, ok=True)
    (second,) = waiters.answerable()
    assert second.ok is False  # batch 1 was unsettled when it came too


def test_a_waiter_with_nothing_to_wait_for_is_answerable_at_once() -> None:
    waiters: Waiters[str] = Waiters()
    waiters.add("p", 1, ok=False)
    (waiter,) = waiters.answerable()
    assert waiter.ok is False


def test_a_confirmation_waits_for_batches_not_cut_yet_and_hears_of_no_loss() -> None:
    waiters: Waiters[str] = Waiters()
    waiters.dispatched(1)
    waiters.add_confirmation("p", 7, pending=[2])
    waiters.settled(1, ok=False)
    assert waiters.answerable() == [] and not waiters.covers("p", 2)
    waiters.dispatched(2)
    waiters.settled(2, ok=True)
    (waiter,) = waiters.answerable()
    assert waiter.confirms == 7


# -- lifetime ------------------------------------------------------------------------
def lifetime(timeout_s: float = 5.0, linger_s: float = 2.0) -> Lifetime:
    return Lifetime(timeout_s, linger_s, clock=lambda: 0.0)


def test_sigterm_means_serve_on_until_the_timeout_then_end() -> None:
    life = lifetime(linger_s=1000.0)
    life.activity(1, 0, 0.0)
    life.on_sigterm()
    assert life.due(100.0) is None and life.phase.name == LEAVING
    assert life.phase.deadline == 105.0
    assert life.due(104.9) is None
    assert life.due(105.0) == "SIGTERM"
    assert life.begin_end("SIGTERM", 105.0) and life.phase.name == ENDING
    assert life.phase.deadline == 110.0


def test_an_end_request_begins_the_end_once() -> None:
    life = lifetime()
    life.activity(3, 0, 0.0)
    assert life.phase.name == SERVING and not life.finished(0.0, 0)
    life.request_end("test")
    assert life.due(10.0) == "test"
    assert life.begin_end("test", 10.0) and life.phase.deadline == 15.0
    assert not life.begin_end("again", 20.0) and life.phase.deadline == 15.0
    assert life.due(11.0) is None  # ending already
    assert life.finished(12.0, unsettled=0) and not life.finished(12.0, unsettled=1)
    assert life.finished(15.0, unsettled=1)


def test_the_flusher_lingers_once_no_process_is_connected_then_ends() -> None:
    life = lifetime(linger_s=2.0)
    assert life.next_deadline(0.0) == 2.0  # nobody has connected yet: the linger runs
    life.activity(2, 0, 1.0)
    assert life.due(50.0) is None and life.next_deadline(0.0) is None
    life.activity(0, 0, 50.0)
    assert life.due(51.9) is None and life.next_deadline(0.0) == 52.0
    life.activity(1, 0, 51.0)  # a new process came in time: it serves on
    assert life.due(60.0) is None
    life.activity(0, 0, 60.0)
    assert life.due(62.0) == "no process connected for 2 s, nothing held"


def test_with_nobody_connected_it_drains_after_its_linger_and_ends_once_empty() -> None:
    life = lifetime(linger_s=2.0)
    life.activity(1, 0, 0.5)
    life.activity(0, 500, 1.0)  # every process left; their events are still held
    assert not life.draining(2.9) and life.next_deadline(2.9) == 3.0
    assert life.draining(3.0) and life.next_deadline(3.0) is None  # no busy loop
    assert life.due(100.0) is None  # it serves on while it holds events
    life.activity(0, 0, 100.0)  # all settled: now it ends
    assert life.due(100.0) == "no process connected for 2 s, nothing held"


def test_a_sigtermed_flusher_with_nobody_connected_ends_after_its_linger() -> None:
    life = lifetime(timeout_s=100.0, linger_s=2.0)
    life.on_sigterm()
    assert life.due(1.0) is None and life.phase.name == LEAVING
    assert life.due(2.0) == "no process connected for 2 s, nothing held"


# -- stats ---------------------------------------------------------------------------
def test_stats_merge_local_and_flusher_counters() -> None:
    local = LocalCounters(tracked=5, queued=4)
    local.dropped["invalid_field"] = 1
    flusher = FlusherCounters(pid=99, generation=2, received=4, delivered=3)
    flusher.dropped["queue_full"] = 1
    flusher.count_received(1234)
    merged = merge(local, 0, 1, "@p", flusher.snapshot(held=0))
    assert merged.dropped == {"invalid_field": 1, "queue_full": 1}
    assert (merged.flusher_pid, merged.flusher_restarts, merged.delivered) == (99, 2, 3)
    assert merged.received_by_pid == {1234: 1} and merged.pipeline == "@p"
    alone = merge(local, 2, 1, "@p", None)
    assert alone.delivered is None and alone.flusher_restarts == 1 and alone.buffered == 2


def test_processes_long_gone_are_forgotten_and_the_reply_stays_small() -> None:
    from trubrics_mp._stats import MAX_GONE_PIDS

    counters = FlusherCounters(pid=1, generation=0)
    for pid in range(10, 30_010):  # a server that recycled 30,000 workers
        counters.count_received(pid)
        counters.process_gone(pid)
    counters.count_received(5)  # a live one
    snapshot = counters.snapshot(held=0)
    assert len(snapshot["received_by_pid"]) == MAX_GONE_PIDS + 1
    assert sum(snapshot["received_by_pid"].values()) + snapshot["received_from_forgotten"] == 30_001
    assert len(proto.stats_reply(1, json.dumps(snapshot).encode())) < proto.MAX_MESSAGE_BYTES // 4
