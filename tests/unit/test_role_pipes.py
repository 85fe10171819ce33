"""Each connection's pipe (``_pipe``), in process: its records, what the flusher's
reader does with it, and what a process takes back once the connection ended.

The flusher tests reuse the harness of ``test_role_flusher``: a real flusher
loop in a thread, raw client sockets, a fake poster; here each client also
hands over a pipe with its route, as ``_link`` does.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
from collections.abc import Iterator

import pytest
from support.fakes import ANSWER_200, FakePoster, private_socket_path
from support.flusher_harness import DEADLINE_S, Harness

from trubrics_mp import _protocol as proto
from trubrics_mp._config import Config
from trubrics_mp._flusher import Flusher, nap_until
from trubrics_mp._pipe import (
    NAP_S,
    NEWLINE,
    QUIET_POLLS,
    RECORD_MAX_BYTES,
    EventPipe,
    split_records,
)
from trubrics_mp._reader import Conn, PipeOf, Reader
from trubrics_mp._route import Route
from trubrics_mp._servers import poll_until

ROUTE = proto.route(
    "0123456789abcdef", Route("http://127.0.0.1:9", "unit-key", 5, 3600.0).to_bytes()
)


def record(seq: int, src: str = "t") -> bytes:
    return proto.EVENT + json.dumps({"src": src, "seq": seq}).encode() + NEWLINE


@pytest.fixture
def h() -> Iterator[Harness]:
    made = Harness(ANSWER_200)
    yield made
    made.stop()


@pytest.fixture
def pipe() -> Iterator[EventPipe]:
    made = EventPipe()
    yield made
    made.close()


def with_pipe(h: Harness, pipe: EventPipe) -> socket.socket:
    """A connection to the harness's flusher that hands over ``pipe`` with its route."""
    sock = h.connect()
    socket.send_fds(sock, [ROUTE], [pipe.read_fd])
    return sock


# -- records -------------------------------------------------------------------------------
def test_records_are_split_at_newlines_and_a_cut_one_waits_for_its_end() -> None:
    records, rest = split_records(b"", b"E{1}\nE{2}\nE{")
    assert (records, rest) == ([b"E{1}", b"E{2}"], b"E{")
    assert split_records(rest, b"3}\n") == ([b"E{3}"], b"")


def test_a_full_pipe_refuses_a_record_whole_and_never_takes_part_of_it(
    pipe: EventPipe,
) -> None:
    big = proto.EVENT + b"{" + b"x" * (RECORD_MAX_BYTES - 4) + b"}" + NEWLINE
    assert len(big) == RECORD_MAX_BYTES
    written = 0
    while pipe.writer.write(big) is not None:
        written += 1
    records, spoiled = pipe.take_back()
    assert len(records) == written > 0 and set(records) == {big} and spoiled == 0


def test_what_is_taken_back_is_whole_records_and_a_count_of_the_rest(
    pipe: EventPipe,
) -> None:
    pipe.writer.write(record(1) + b"garbage\n" + record(2) + b'E{"cut')
    records, spoiled = pipe.take_back()
    assert records == [record(1), record(2)] and spoiled == 2
    assert pipe.take_back() == ([], 0)


def test_a_closed_pipe_refuses_writes_and_has_nothing_to_take_back(pipe: EventPipe) -> None:
    pipe.close()
    with pytest.raises(ValueError):
        pipe.writer.write(record(1))
    assert pipe.take_back() == ([], 0)


# -- the flusher's side ------------------------------------------------------------------------
def test_events_in_a_pipe_are_delivered_and_a_flush_covers_them(
    h: Harness, pipe: EventPipe
) -> None:
    sock = with_pipe(h, pipe)
    for seq in range(3):
        pipe.writer.write(record(seq))
    assert h.ask(sock, proto.FLUSH).ok
    assert sorted(h.delivered()) == [("t", 0), ("t", 1), ("t", 2)]
    assert h.stats(sock)["received"] == 3


def test_a_connection_that_closes_has_its_pipe_read_to_the_end(h: Harness, pipe: EventPipe) -> None:
    sock = with_pipe(h, pipe)
    for seq in range(7):
        pipe.writer.write(record(seq, "gone"))
    pipe.close()
    sock.close()  # the process left at once: nobody else can read its pipe
    other = h.connect()
    poll_until(lambda: h.stats(other)["received"] == 7, DEADLINE_S, "the pipe read")
    assert h.ask(other, proto.FLUSH).ok
    assert sorted(seq for _, seq in h.delivered()) == list(range(7))


def test_after_a_bad_message_the_pipe_is_closed_before_the_socket(
    h: Harness, pipe: EventPipe
) -> None:
    """What the pipe holds then belongs to the process: the flusher reads no more of it."""
    sock = with_pipe(h, pipe)
    sock.send(b"Z")
    while sock.recv(proto.MAX_MESSAGE_BYTES):  # until the flusher closes the connection
        pass
    os.close(pipe.read_fd)
    pipe.read_fd = -1
    with pytest.raises(BrokenPipeError):  # no reader is left: the flusher's end is closed
        os.write(pipe.writer.fileno(), record(1))


def test_a_torn_record_is_counted_and_costs_no_other_event(h: Harness, pipe: EventPipe) -> None:
    sock = with_pipe(h, pipe)
    pipe.writer.write(record(0) + record(1) + b'E{"src": "t", "se')  # its end never comes
    pipe.close()
    sock.close()
    other = h.connect()
    poll_until(lambda: h.stats(other)["dropped"], DEADLINE_S, "the torn record counted")
    assert h.stats(other)["dropped"] == {"bad_message": 1}
    assert h.ask(other, proto.FLUSH).ok
    assert sorted(h.delivered()) == [("t", 0), ("t", 1)]


# -- napping ---------------------------------------------------------------------------------
def test_a_napping_pipe_is_unwatched_until_its_nap_ends(pipe: EventPipe) -> None:
    address = private_socket_path()
    listener = proto.bind_listener(address)
    selector = selectors.DefaultSelector()
    seen: list[bytes] = []
    reader = Reader(
        listener, selector, lambda c, k, p, lane: seen.append(p), b"H", logging.getLogger("t")
    )
    client = proto.connect(address)
    try:
        socket.send_fds(client, [ROUTE], [pipe.read_fd])
        reader.accept()  # the connection is in the backlog already
        (conn,) = reader.open_connections()
        reader.read(conn, 1)  # the route, and with it the pipe
        assert watched(selector, conn)
        pipe.writer.write(record(0))
        assert reader.read_pipe(conn, 10) == len(record(0)) and len(seen) == 2
        reader.nap(conn, until=100.0)
        assert not watched(selector, conn) and reader.next_pipe_wake() == 100.0
        reader.pause()
        reader.resume()  # a nap outlasts a pause
        assert reader.wake_pipes(now=99.0) == []
        assert not watched(selector, conn)
        assert reader.wake_pipes(now=100.0) == [conn]  # the caller reads it, then decides
        assert not watched(selector, conn) and reader.next_pipe_wake() is None
        reader.watch(conn)
        assert watched(selector, conn)
        reader.close(conn)
        assert conn.pipe is None and len(selector.get_map()) == 1  # the listener
    finally:
        client.close()
        reader.stop_listening()
        selector.close()


def watched(selector: selectors.BaseSelector, conn: Conn) -> bool:
    return any(
        isinstance(key.data, PipeOf) and key.data.conn is conn
        for key in selector.get_map().values()
    )


def test_a_pipe_in_use_is_polled_and_watched_again_only_once_it_stays_empty(
    pipe: EventPipe,
) -> None:
    """The flusher's policy (``Flusher._read_pipe``): while reads find events, the
    pipe naps (its writes wake nobody); after ``QUIET_POLLS`` empty reads in a row it
    is watched again, so that an idle process's next event wakes the flusher."""
    address = private_socket_path()
    config = Config(api_key="unit-key", host="http://127.0.0.1:9", flush_at=5)
    flusher = Flusher(config, proto.bind_listener(address), 1, FakePoster(ANSWER_200))
    client = proto.connect(address)
    try:
        socket.send_fds(client, [ROUTE], [pipe.read_fd])
        flusher.reader.accept()
        (conn,) = flusher.reader.open_connections()
        flusher.reader.read(conn, 1)  # the route, and with it the pipe
        assert watched(flusher.selector, conn)
        for seq in range(3):  # an active writer: every poll finds an event
            pipe.writer.write(record(seq))
            flusher._read_pipe(conn)
            assert not watched(flusher.selector, conn) and conn.pipe_quiet_polls == 0
        for _ in range(QUIET_POLLS - 1):
            flusher._read_pipe(conn)
            assert not watched(flusher.selector, conn)
        flusher._read_pipe(conn)
        assert watched(flusher.selector, conn) and flusher.reader.next_pipe_wake() is None
        assert flusher.intake.held == 3
    finally:
        client.close()
        flusher.reader.stop_listening()
        flusher.selector.close()


def test_naps_end_on_a_shared_tick_between_one_and_two_naps_away() -> None:
    for now in (0.0, 1.0001, 5.0019, 123.4567):
        until = nap_until(now)
        assert NAP_S <= until - now <= 2 * NAP_S + 1e-9
        assert round(until / NAP_S, 6).is_integer()


def test_a_read_that_is_not_all_plain_events_goes_message_by_message(
    h: Harness, pipe: EventPipe
) -> None:
    """LLM events, and a bad record: the events before it are taken, it is counted, and
    its connection closed (what followed it in that read counts as gone in its process)."""
    sock = with_pipe(h, pipe)
    llm = proto.LLM_EVENT + json.dumps({"src": "llm", "seq": 0}).encode() + NEWLINE
    pipe.writer.write(record(0) + llm + record(1) + b"E{not an object\n")
    while sock.recv(proto.MAX_MESSAGE_BYTES):  # until the flusher closes the connection
        pass
    other = h.connect()
    assert h.stats(other)["dropped"] == {"bad_message": 1}
    assert h.ask(other, proto.FLUSH).ok
    assert sorted(h.delivered()) == [("llm", 0), ("t", 0), ("t", 1)]
    assert {call.endpoint for call in h.poster.calls} == {"publish_events", "publish_llm_events"}


def test_plain_events_on_a_socket_are_taken_together_and_a_request_after_them_covers_them(
    h: Harness,
) -> None:
    """Events that found the pipe full come on the socket, newline and all: read in
    groups, each group handed on before the next control message."""
    sock = h.connect()
    for seq in range(12):
        sock.send(record(seq, "sock"))
    assert h.ask(sock, proto.FLUSH).ok
    assert sorted(seq for _, seq in h.delivered()) == list(range(12))
    assert h.stats(sock)["received"] == 12


def test_a_full_pipe_grows_once_and_takes_more(pipe: EventPipe) -> None:
    def fill() -> int:
        written = 0
        while pipe.writer.write(record(written)) is not None:
            written += 1
        return written

    before = fill()
    assert pipe.grow() and not pipe.grow()  # once only
    assert fill() > before  # it holds about 16 times more now
