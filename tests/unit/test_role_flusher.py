"""The flusher's main loop, in process: a real listener, raw client sockets, a fake poster.

Each test runs ``Flusher.serve()`` in a thread (no signals) and talks to it
through ``SOCK_SEQPACKET`` connections made as client processes make them.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from typing import Any

import pytest
from support.fakes import FakePoster, always, private_socket_path
from support.flusher_harness import (
    DEADLINE_S,
    confirmations,
    replies_before,
    replies_until_closed,
)

from trubrics_mp import _protocol as proto
from trubrics_mp._config import MIB, Config
from trubrics_mp._flusher import Flusher
from trubrics_mp._retry import Outcome
from trubrics_mp._route import Route
from trubrics_mp._servers import poll_until


def test_a_full_batch_leaves_at_once_and_endpoints_never_mix(harness: Any) -> None:
    h = harness()
    sock = h.connect()
    for seq in range(5):
        h.track(sock, seq, kind=proto.EVENT if seq % 2 else proto.LLM_EVENT)
    for seq in range(5, 8):
        h.track(sock, seq)
    poll_until(lambda: h.poster.count() == 1, DEADLINE_S, "the full batch of plain events")
    (call,) = h.poster.calls
    assert call.endpoint == "publish_events" and [e["seq"] for e in call.events] == [1, 3, 5, 6, 7]


def test_flush_covers_what_every_connection_queued_before_it(harness: Any) -> None:
    h = harness()
    producer, asker = h.connect(), h.connect()
    for seq in range(3):
        h.track(producer, seq, "producer")
    assert h.ask(asker, proto.FLUSH).ok
    assert sorted(h.delivered()) == [("producer", 0), ("producer", 1), ("producer", 2)]


def test_flush_says_false_when_a_batch_it_covers_is_dropped(harness: Any) -> None:
    h = harness(always(400))
    sock = h.connect()
    h.track(sock, 0)
    assert h.ask(sock, proto.FLUSH).ok is False
    assert h.stats(sock)["dropped"] == {"http_400": 1}
    h.poster.script = always(200)
    h.track(sock, 1)
    assert h.ask(sock, proto.FLUSH).ok  # a later flush covers only later batches


def test_at_the_bound_reading_pauses_and_events_wait_in_the_kernel(harness: Any) -> None:
    gate = threading.Event()

    def blocked(number: int, endpoint: str, events: list[dict[str, Any]]) -> Outcome:
        gate.wait(DEADLINE_S)
        return Outcome(200)

    h = harness(blocked, max_queue_bytes=MIB, flush_at=10)
    sock = h.connect()
    pad = "x" * 10_000

    def produce() -> None:  # blocks while the flusher does not read: a thread
        for seq in range(200):
            sock.send(proto.EVENT + json.dumps({"src": "t", "seq": seq, "pad": pad}).encode())

    producer = threading.Thread(target=produce)
    producer.start()
    poll_until(lambda: h.flusher.reader.paused, DEADLINE_S, "reading to pause at the bound")
    intake = h.flusher.intake
    assert MIB <= intake.held_bytes < MIB + 10_100 and intake.held < 200
    gate.set()
    producer.join(DEADLINE_S)
    assert h.ask(sock, proto.FLUSH).ok  # nothing was dropped: it waited
    assert sorted(seq for _, seq in h.delivered()) == list(range(200))
    assert h.stats(sock)["dropped"] == {} and not h.flusher.reader.paused


def test_once_the_last_connection_closed_it_lingers_then_delivers_and_leaves(
    harness: Any,
) -> None:
    h = harness(linger_s=0.2)
    stopped_listening = threading.Event()
    h.flusher.on_stop_listening = stopped_listening.set
    first, second = h.connect(), h.connect()
    for seq in range(7):
        h.track(first, seq)
    first.close()
    h.ask(second, proto.STATS)  # one connection left: it serves on
    assert h.thread.is_alive() and not stopped_listening.is_set()
    second.close()
    h.thread.join(DEADLINE_S)
    assert not h.thread.is_alive() and stopped_listening.is_set()
    assert sorted(s for _, s in h.delivered()) == list(range(7))
    with pytest.raises(ConnectionRefusedError):
        proto.connect(h.address)  # it stopped listening


def test_a_shutdown_request_is_no_longer_understood(harness: Any) -> None:
    h = harness()
    sock, other = h.connect(), h.connect()
    sock.send(b"Q" + bytes(8))  # what an owner of 0.1 sent to stop the pipeline
    assert h.stats(other)["dropped"] == {"bad_message": 1} and h.thread.is_alive()


def test_at_the_deadline_what_is_undelivered_is_counted(harness: Any) -> None:
    h = harness(always(503), shutdown_timeout_s=0.2)
    sock = h.connect()
    for seq in range(5):
        h.track(sock, seq)
    poll_until(lambda: h.poster.count() >= 1, DEADLINE_S, "a first failed post")
    h.stop()
    assert h.flusher.counters.dropped == {"shutdown_timeout": 5}
    # Its goodbye confirms nothing: the process counts all five as gone with the flusher.
    replies = replies_until_closed(sock)
    assert [proto.settled_counts(r) for r in replies if r.kind == proto.BYE] == [(0, 0, None)]
    assert confirmations(replies) == []


@pytest.mark.parametrize(
    "message",
    [
        b"F",  # a flush request without its request id
        b"Z{}",  # an unknown kind
        b"E[1, 2]",  # an event that is no JSON object
        b"E{" + b"x" * 70_000 + b"}",  # over max_event_bytes
    ],
    ids=["short-request", "unknown-kind", "not-an-object", "too-large"],
)
def test_a_bad_message_is_counted_closes_its_connection_and_hurts_no_one(
    harness: Any, message: bytes
) -> None:
    h = harness()
    bad, good = h.connect(), h.connect()
    bad.send(message)
    h.track(good, 0)
    assert h.ask(good, proto.FLUSH).ok
    assert h.stats(good)["dropped"] == {"bad_message": 1}
    assert h.delivered() == [("t", 0)]
    assert replies_until_closed(bad) == []  # closed by the flusher, nothing said


def test_an_event_that_only_looks_like_an_object_is_sifted_out_of_its_refused_batch(
    harness: Any,
) -> None:
    h = harness()
    sock = h.connect()
    h.track(sock, 0)
    sock.send(proto.EVENT + b'{"broken": }')  # braces, but no JSON: the API refuses the body
    for seq in range(1, 4):
        h.track(sock, seq)
    assert h.ask(sock, proto.FLUSH).ok is False  # one of its events was lost
    assert sorted(seq for _, seq in h.delivered()) == [0, 1, 2, 3]
    stats = h.stats(sock)
    assert stats["dropped"] == {"bad_message": 1} and stats["delivered"] == 4


def test_a_connection_reset_still_delivers_what_it_had_queued(harness: Any) -> None:
    h = harness()
    sock = proto.connect(h.address)  # never reads its hello: closing it resets the connection
    for seq in range(3):
        h.track(sock, seq, "reset")
    sock.close()
    asker = h.connect()
    poll_until(lambda: h.stats(asker)["received"] == 3, DEADLINE_S, "3 events received")
    assert h.ask(asker, proto.FLUSH).ok
    assert sorted(h.delivered()) == [("reset", 0), ("reset", 1), ("reset", 2)]


def test_stats_count_by_pid_and_report_the_generation(harness: Any) -> None:
    h = harness()
    sock = h.connect()
    for seq in range(5):
        h.track(sock, seq)
    assert h.ask(sock, proto.FLUSH).ok
    stats = h.stats(sock)
    assert stats["generation"] == 3 and stats["delivered"] == 5 and stats["requests"] == 1
    assert stats["received_by_pid"] == {str(os.getpid()): 5} and stats["held"] == 0


class _Exhausted(socket.socket):
    """A listener whose first accepts fail as a process out of descriptors does."""

    failures = 3

    def accept(self) -> tuple[socket.socket, Any]:
        if _Exhausted.failures > 0:
            _Exhausted.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_out_of_descriptors_the_flusher_backs_off_and_serves_on() -> None:
    config = Config(api_key="unit-key", host="http://127.0.0.1:9", flush_at=1)
    address = private_socket_path()
    listener = _Exhausted(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    listener.listen(8)
    poster = FakePoster()
    flusher = Flusher(config, listener, 0, poster=poster)
    thread = threading.Thread(target=flusher.serve, daemon=True)
    thread.start()
    try:
        sock = proto.connect(address)
        sock.setblocking(True)
        sock.send(proto.EVENT + b'{"src":"t","seq":0}')
        poll_until(lambda: poster.count() == 1, DEADLINE_S, "the event, once accepted")
        assert flusher.reader.accept_failures == 3 and thread.is_alive()
    finally:
        flusher.stop("test over")
        thread.join(DEADLINE_S)
        sock.close()


def test_flush_says_false_for_a_batch_dropped_before_it_was_asked(harness: Any) -> None:
    h = harness(always(400), flush_at=1)
    sock, other = h.connect(), h.connect()
    h.track(sock, 0)
    poll_until(lambda: h.stats(other)["dropped"] == {"http_400": 1}, DEADLINE_S, "the drop")
    assert h.ask(sock, proto.FLUSH).ok is False  # settled before the flush came: still told
    assert h.ask(other, proto.FLUSH).ok is True  # none of its events were lost
    assert h.ask(sock, proto.FLUSH).ok is True  # told once


# -- confirmations and goodbyes: what a process can count if the flusher dies ---------------
def test_a_connection_hears_once_its_events_are_settled_then_nothing_while_idle(
    harness: Any,
) -> None:
    h = harness()  # batches of 5; a waiting batch never comes due by itself
    sock = h.connect()
    for seq in range(3):
        h.track(sock, seq)
    assert confirmations(replies_before(h, sock)) == []  # still waiting in their batch
    for seq in range(3, 5):
        h.track(sock, seq)  # the batch is full: it leaves, and is delivered
    got: list[proto.Reply] = []
    while (5, 0) not in confirmations(got):
        got.append(proto.parse_reply(sock.recv(proto.MAX_MESSAGE_BYTES)))
    # The first confirmation covers the event that armed it; the next one, all five.
    assert confirmations(got) == [(1, 0), (5, 0)]
    assert confirmations(replies_before(h, sock)) == []  # idle: nothing more to confirm


def test_confirmations_tell_a_loss_no_flush_has_reported_yet(harness: Any) -> None:
    h = harness(always(400), flush_at=1)
    sock = h.connect()
    h.track(sock, 0)
    got: list[proto.Reply] = []
    while not confirmations(got):
        got.append(proto.parse_reply(sock.recv(proto.MAX_MESSAGE_BYTES)))
    assert confirmations(got) == [(1, 1)]
    assert h.ask(sock, proto.FLUSH).ok is False  # the flush is told, once


def test_the_goodbye_tells_what_was_read_and_lost_when_all_was_settled(harness: Any) -> None:
    h = harness(always(400))
    sock = h.connect()
    h.track(sock, 0)
    h.track(sock, 1)
    replies_before(h, sock)  # both events are read
    h.stop()
    byes = [proto.settled_counts(r) for r in replies_until_closed(sock) if r.kind == proto.BYE]
    assert byes == [(2, 1, None)]  # both settled; one loss (their batch) no flush was told of


# -- routes: one flusher for every key, host and batching ---------------------------------
def test_clients_of_other_keys_hosts_and_batching_share_the_flusher_never_a_batch(
    harness: Any,
) -> None:
    h = harness()  # flush_at 5 for a connection that tells no route
    plain, other, third = h.connect(), h.connect(), h.connect()
    other_route = Route("http://127.0.0.1:8", "sk-other", 2, 3600.0)
    third_route = Route("http://127.0.0.1:9", "sk-third", 3, 3600.0)
    other.send(proto.route("0123456789abcdef", other_route.to_bytes()))
    third.send(proto.route("0123456789abcdef", third_route.to_bytes()))
    for seq in range(6):
        h.track(plain, seq, "plain")
        h.track(other, seq, "other")
        h.track(third, seq, "third")
    for sock in (plain, other, third):
        assert h.ask(sock, proto.FLUSH).ok
    batches = [(call.route, [e["src"] for e in call.events]) for call in h.poster.calls]
    assert {route for route, _ in batches} == {None, other_route, third_route}
    for route, sources in batches:  # never a mixed batch, each cut at its own flush_at
        want = {None: "plain", other_route: "other", third_route: "third"}[route]
        assert set(sources) == {want}
    sizes = sorted((want, len(s)) for route, s in batches for want in {s[0]})
    assert sizes == [("other", 2)] * 3 + [("plain", 1), ("plain", 5)] + [("third", 3)] * 2


def test_a_route_that_is_no_valid_settings_is_a_bad_message_never_quoted(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    sock, other = h.connect(), h.connect()
    bad = b'{"host": "ftp://x", "api_key": "sk-leak", "flush_at": 1}'
    sock.send(proto.route("0123456789abcdef", bad))
    assert sock.recv(proto.MAX_MESSAGE_BYTES) == b""  # its connection is closed
    assert h.stats(other)["dropped"] == {"bad_message": 1}
    assert "sk-leak" not in caplog.text
