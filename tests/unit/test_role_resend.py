"""Closing the death window (issue 14, ``_resend``): what a process sends again, and
how a flusher keeps it once.

Pure units first (the process's record of what it sent, the flusher's record of
what is on disk), then the Link against a hand-driven "flusher", then the real
flusher loop on a spool.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from support.fakes import FakePoster, private_socket_path
from support.flusher_harness import Harness, replies_until_closed

from trubrics_mp import _protocol as proto
from trubrics_mp._config import EVENTS_ENDPOINT, MIB, Config
from trubrics_mp._durable import Durable
from trubrics_mp._flusher import Flusher
from trubrics_mp._link import Link
from trubrics_mp._protocol import PIPE, SOCKET
from trubrics_mp._reader import Conn
from trubrics_mp._resend import Origin, Seen, Unconfirmed, parse_resend, resend
from trubrics_mp._route import Route
from trubrics_mp._spool import Hooks, Spool

from .test_role_durable import DOWN, Api, spool_events
from .test_role_link import StandInSupervisor, event, fill, linked, read_all

TOKEN, OTHER = "0123456789abcdef", "fedcba9876543210"
ROUTE = Route("http://127.0.0.1:9", "unit-key", 5, 3600.0).to_bytes()  # the harness's own


# -- the process's side: what it sent and may send again ---------------------------------------
def test_what_is_on_disk_is_forgotten_and_the_rest_is_sent_again_with_its_origin() -> None:
    kept = Unconfirmed(TOKEN, max_bytes=1 << 20)
    for n in range(4):
        kept.sent(PIPE, b'E{"p":%d}\n' % n)
    kept.sent(SOCKET, b'E{"s":0}\n')
    kept.sent(SOCKET, resend(Origin(OTHER, PIPE, 9), b'E{"old":9}\n'))  # sent again already
    kept.on_disk((2, 0))
    kept.taken_back(1)  # the newest pipe message came back unread: sent anew, not again
    assert kept.resends() == [
        b'P0123456789abcdef:0:2 E{"p":2}\n',
        b'P0123456789abcdef:1:0 E{"s":0}\n',
        b'Pfedcba9876543210:0:9 E{"old":9}\n',  # keeps its first origin
    ]
    assert len(kept) == 0 and kept.nbytes == 0


def test_past_its_bound_the_oldest_are_let_go_and_counted() -> None:
    kept = Unconfirmed(TOKEN, max_bytes=30)
    for n in range(5):
        kept.sent(PIPE, b'E{"n":%d}\n' % n)  # 9 bytes each
    assert kept.let_go == 2 and kept.nbytes == 27
    assert [parse_resend(m[1:]) for m in kept.resends()] == [
        (Origin(TOKEN, PIPE, n), b'E{"n":%d}' % n) for n in (2, 3, 4)
    ]


def test_a_flush_answer_settles_everything_sent() -> None:
    kept = Unconfirmed(TOKEN, max_bytes=1 << 20)
    kept.sent(PIPE, b"E{}\n")
    kept.sent(SOCKET, b"E{}\n")
    kept.settled()
    assert kept.resends() == []


def test_origins_and_resent_messages_are_parsed_strictly() -> None:
    origin = Origin(TOKEN, SOCKET, 123)
    assert Origin.parse(origin.tag) == origin and origin.at(2) == Origin(TOKEN, SOCKET, 125)
    assert parse_resend(resend(origin, b"L{}\n")[1:]) == (origin, b"L{}")
    for junk in ("", "0123:1:2", TOKEN + ":2:0", TOKEN + ":0:-1", TOKEN.upper() + ":0:1"):
        assert Origin.parse(junk) is None
    assert parse_resend(b"no origin E{}") is None


# -- the flusher's side: what the spool holds ----------------------------------------------------
def test_seen_holds_runs_of_each_lane_in_any_order() -> None:
    seen = Seen()
    seen.add(Origin(TOKEN, PIPE, 10), 5)  # 10..14
    seen.add(Origin(TOKEN, PIPE, 0), 3)  # 0..2
    seen.add(Origin(TOKEN, PIPE, 15), 2)  # 15..16, joins the first run
    seen.add(Origin(TOKEN, PIPE, 2), 9)  # 2..10: every run joins
    seen.add(Origin(TOKEN, SOCKET, 4), 1)
    on_disk = [n for n in range(20) if seen.has(Origin(TOKEN, PIPE, n))]
    assert on_disk == list(range(17))
    assert [n for n in range(6) if seen.has(Origin(TOKEN, SOCKET, n))] == [4]
    assert not seen.has(Origin(OTHER, PIPE, 0))


def test_the_owner_hears_before_a_segment_is_deleted(tmp_path: Path) -> None:
    spool = Spool.open(str(tmp_path / "spool"), segment_bytes=64)
    files_when_told: list[int] = []
    spool.before_delete = lambda: files_when_told.append(len(os.listdir(spool.directory)))
    appended = spool.append("publish_events", "tag", [b"{}"] * 40)  # rolls at once
    assert appended.ref is not None and files_when_told == []
    spool.ack([appended.ref])
    assert files_when_told and files_when_told[0] >= 2  # the segment was still there
    spool.close()


# -- the Link: a process sends again what a dead flusher had not put on disk ----------------------
@pytest.fixture
def spool_link() -> Iterator[tuple[Link, StandInSupervisor]]:
    with linked(Config(api_key="unit-key", spool_dir="/nonexistent/spool")) as made:
        yield made  # the spool directory is never opened here


def test_events_read_and_not_confirmed_on_disk_are_sent_again_to_the_next_flusher(
    spool_link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = spool_link
    fill(ours, 5)
    peer = supervisor.accept()
    assert ours.unconfirmed is not None
    token = ours.unconfirmed.token
    assert len(read_all(peer)) == 5  # read, as a flusher does; 3 of them on disk:
    peer.send(proto.hello(0, True))
    peer.send(proto.confirmed(3, 0, (3, 0)))
    peer.close()  # SIGKILL
    ours.read_waiting()
    again = [resend(Origin(token, PIPE, n), event(n) + proto.END) for n in (3, 4)]
    assert list(ours.buffer) == again
    assert ours.counters.dropped == {} and ours.counters.resent == 2 and ours.take_losses() == 0
    assert ours.drain(deadline=None)
    assert read_all(supervisor.accept()) == [message.removesuffix(b"\n") for message in again]


def test_what_the_socket_held_is_sent_again_and_the_pipe_comes_back_as_it_was(
    spool_link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = spool_link
    big = b'E{"pad":"' + b"x" * 5000 + b'"}\n'  # too large for the pipe: the socket
    fill(ours, 2)
    ours.send(big)
    peer = supervisor.accept()
    assert ours.unconfirmed is not None
    token = ours.unconfirmed.token
    peer.send(proto.hello(0, True))
    peer.close()  # died before reading anything
    ours.read_waiting()
    assert list(ours.buffer) == [
        resend(Origin(token, SOCKET, 0), big),
        event(0) + proto.END,
        event(1) + proto.END,
    ]
    assert ours.counters.dropped == {} and ours.counters.resent == 1


@pytest.mark.parametrize(
    "said",
    [
        [proto.hello(0, False)],
        [proto.hello(0, True), proto.confirmed(0, 0)],
        [proto.hello(0, True), proto.bye(0, 0)],
    ],
    ids=["a flusher without a spool", "a confirmation without lanes", "a goodbye without lanes"],
)
def test_nothing_is_sent_again_once_the_flusher_cannot_say_what_is_on_disk(
    spool_link: tuple[Link, StandInSupervisor], said: list[bytes]
) -> None:
    ours, supervisor = spool_link
    fill(ours, 2)
    peer = supervisor.accept()
    assert len(read_all(peer)) == 2
    for message in said:
        peer.send(message)
    ours.read_waiting()
    assert ours.unconfirmed is None  # and every send is lock-free again
    peer.close()
    ours.read_waiting()
    assert not ours.buffer and ours.counters.dropped == {"flusher_gone": 2}


def test_a_flush_answer_leaves_nothing_to_send_again(
    spool_link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = spool_link
    fill(ours, 2)
    peer = supervisor.accept()
    assert len(read_all(peer)) == 2
    peer.send(proto.hello(0, True))
    peer.send(proto.ack(1, True))
    reply = ours.request(proto.FLUSH, deadline=None)
    assert reply is not None and reply.ok
    peer.close()
    ours.read_waiting()
    assert not ours.buffer and ours.counters.dropped == {} and ours.counters.resent == 0


# -- the flusher: what is on disk already is kept once ---------------------------------------
def message(seq: int) -> bytes:
    return b"E" + json.dumps({"src": "t", "seq": seq}).encode() + proto.END


def test_events_sent_again_are_kept_once_under_their_first_origin(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    directory = str(tmp_path / "spool")
    old = harness(DOWN, spool_dir=directory, shutdown_timeout_s=0.2)
    sock = old.connect()
    sock.send(proto.route(TOKEN, ROUTE))
    for seq in range(4):
        old.track(sock, seq)
    old.track(sock, 0, kind=b"P")  # not a message sent again: a bad one, closing it
    closing = replies_until_closed(sock)
    confirmed = [proto.settled_counts(r) for r in closing if r.kind == proto.CONFIRMED]
    assert confirmed[-1] == (4, 0, (0, 5))  # the bad one too: it is never sent again
    old.stop()

    api = Api()
    api.up()
    new = harness(api, spool_dir=directory)  # the dead flusher's spool, its 4 events
    other = new.connect()
    other.send(proto.route(OTHER, ROUTE))
    for seq in range(6):  # the process sends again all it had not heard of: 4 and 5 are new
        other.send(resend(Origin(TOKEN, SOCKET, seq), message(seq)))
    other.send(resend(Origin(TOKEN, SOCKET, 5), message(5)))  # and once more, after a death
    assert new.ask(other, proto.FLUSH).ok
    assert sorted(api.taken) == [("t", seq) for seq in range(6)]  # each once
    assert new.stats(other)["spool_resent_on_disk"] == 5
    assert spool_events(new, other) == 0


def test_a_spill_cut_short_by_a_full_disk_confirms_on_disk_only_what_it_wrote(
    tmp_path: Path,
) -> None:
    """At the bound in memory, events go on disk only, a record per ``flush_at``; the
    disk fills after the first: the rest is held in memory, and the connection hears
    nothing more than what is on disk (then only what is settled)."""
    writes = {"left": 1 << 30}

    def write(fd: int, data: memoryview) -> int:
        writes["left"] -= 1
        if writes["left"] < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    config = Config(
        api_key="unit-key",
        host="http://127.0.0.1:9",
        flush_at=5,
        flush_interval_s=3600.0,
        max_queue_bytes=MIB,
        spool_dir=str(tmp_path / "spool"),
    )
    spool = Spool.open(config.spool_dir, hooks=Hooks(write=write))
    durable = Durable(spool, "on", config, logging.getLogger("trubrics_mp.tests"))
    listener = proto.bind_listener(private_socket_path())
    flusher = Flusher(config, listener, 0, poster=FakePoster(DOWN), durable=durable)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn = Conn(ours, os.getpid(), token=TOKEN)
    try:
        event = b'{"pad":"' + b"x" * 10_000 + b'"}'
        filling = [event] * (MIB // len(event) + 1)  # one read's worth: the bound reached
        flusher._add_events(conn, EVENTS_ENDPOINT, filling, MIB, SOCKET)  # noqa: SLF001
        assert flusher.intake.full and conn.lanes[SOCKET] == len(filling)
        writes["left"] = 1  # the first record of the next read, then the disk is full
        flusher._add_events(conn, EVENTS_ENDPOINT, [event] * 13, 13 * len(event), SOCKET)  # noqa: SLF001
        flusher.answers.send_owed(float("inf"))
        theirs.setblocking(False)
        told = []
        with contextlib.suppress(BlockingIOError):
            while True:
                told.append(proto.settled_counts(proto.parse_reply(theirs.recv(1 << 16))))
        on_disk = [counts[2] for counts in told if counts is not None and counts[2]]
        assert on_disk and max(lanes[SOCKET] for lanes in on_disk) <= len(filling) + 5
        assert conn.spool_refused and flusher.answers.lanes(conn) is None
        assert (0, 0, None) in told  # at once: nothing of it is sent again
        assert all(durable.seen.has(Origin(TOKEN, SOCKET, n)) for n in range(len(filling) + 5))
        assert not durable.seen.has(Origin(TOKEN, SOCKET, len(filling) + 5))
    finally:
        ours.close()
        theirs.close()
        listener.close()
        spool.close()
