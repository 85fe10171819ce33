"""The client's Link, in process: buffering, draining, reconnecting, request and reply.

The "flusher" here is a listener the test reads by hand (each connection's
pipe and socket, see :class:`Peer`); the supervisor is a stand-in whose
restart binds a new listener instead of starting a process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Optional

import pytest
from support.fakes import private_socket_path

from trubrics_mp import _protocol as proto
from trubrics_mp._config import Config
from trubrics_mp._link import Link
from trubrics_mp._route import Route
from trubrics_mp._servers import poll_until
from trubrics_mp._supervisor import Supervisor

LOG = logging.getLogger("trubrics_mp.tests")
DEADLINE_S = 10.0


class StandInSupervisor(Supervisor):
    """Starts a "flusher" by binding a fresh listener on the same path; counts starts."""

    def __init__(self, config: Config, path: str) -> None:
        super().__init__(config, path, LOG)
        self.listener: Optional[socket.socket] = proto.bind_listener(path)
        self.restarts = 0
        self.routes: list[Route] = []  # each accepted connection's

    def _start(self) -> bool:
        self.restarts += 1
        os.unlink(self.path)
        self.listener = proto.bind_listener(self.path)
        return True

    def accept(self) -> Peer:
        """The next connection, whose first message (checked, then kept) is its route,
        with its pipe's read end."""
        assert self.listener is not None
        self.listener.settimeout(DEADLINE_S)
        conn, _ = self.listener.accept()
        conn.settimeout(DEADLINE_S)
        first, fds, _flags, _address = socket.recv_fds(conn, proto.MAX_MESSAGE_BYTES, 1)
        assert first[:1] == proto.ROUTE, first
        assert len(fds) == 1, "a pipe comes with the route"
        self.routes.append(Route.from_bytes(proto.parse_route(first[1:])[1]))
        return Peer(conn, fds[0])

    def die(self) -> None:
        assert self.listener is not None
        self.listener.close()  # the path stays, refusing connections, as after a SIGKILL
        self.listener = None


@dataclasses.dataclass
class Peer:
    """The flusher's end of one connection: its socket and its pipe's read end."""

    sock: socket.socket
    pipe: int

    def send(self, message: bytes) -> None:
        self.sock.send(message)

    def read_pipe(self) -> list[bytes]:
        """The records waiting in the pipe, without their newline."""
        os.set_blocking(self.pipe, False)
        data = b""
        while True:
            try:
                data += os.read(self.pipe, 1 << 20)
            except BlockingIOError:
                return data.split(b"\n")[:-1]

    def close(self) -> None:
        """Close as a flusher does: the pipe first, then the socket."""
        os.close(self.pipe)
        self.sock.close()


@pytest.fixture
def link() -> Iterator[tuple[Link, StandInSupervisor]]:
    with linked(Config(api_key="unit-key", process_buffer_bytes=50 * 13)) as made:
        yield made


@contextlib.contextmanager
def linked(config: Config) -> Iterator[tuple[Link, StandInSupervisor]]:
    """A Link of ``config`` and its hand-driven supervisor; both closed after."""
    supervisor = StandInSupervisor(config, private_socket_path())
    made = Link(config, supervisor, LOG)
    try:
        yield made, supervisor
    finally:
        made.disconnect()
        if supervisor.listener is not None:
            supervisor.listener.close()


def read_all(peer: Peer) -> list[bytes]:
    """Every record waiting in the pipe, then every message on the socket (events
    without their newline), without waiting for more."""
    out = peer.read_pipe()
    peer.sock.setblocking(False)
    while True:
        try:
            out.append(peer.sock.recv(proto.MAX_MESSAGE_BYTES).removesuffix(b"\n"))
        except BlockingIOError:
            return out


def event(seq: int) -> bytes:
    """Event ``seq`` as the flusher reads it (12 bytes; its message adds a newline)."""
    return b'E{"n":%05d}' % seq


def fill(link: Link, count: int, start: int = 0) -> None:
    for seq in range(start, start + count):
        link.send(event(seq) + proto.END)


def test_a_full_socket_buffers_then_drains_in_order(link: tuple[Link, StandInSupervisor]) -> None:
    ours, supervisor = link
    fill(ours, 1)
    conn = supervisor.accept()
    sent = 1
    while not ours.buffer:  # until the kernel refuses: then the buffer takes over
        fill(ours, 1, sent)
        sent += 1
    fill(ours, 10, sent)
    sent += 10
    received = read_all(conn)
    assert ours.drain(deadline=None)
    received += read_all(conn)
    assert received == [event(seq) for seq in range(sent)]
    assert supervisor.routes == [Route.of(ours.config)]  # told first, before any event
    assert ours.counters.queued == sent and ours.take_losses() == 0


def test_past_the_buffer_events_are_lost_counted_and_reported_once(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = link
    fill(ours, 1)
    peer = supervisor.accept()  # kept open: the flusher is alive, just not reading
    sent = 1
    while not ours.counters.dropped:
        fill(ours, 1, sent)
        sent += 1
    fill(ours, 9, sent)
    assert len(ours.buffer) == 50
    assert ours.counters.dropped == {"buffer_full": 10}
    assert ours.take_losses() == 10 and ours.take_losses() == 0
    peer.close()


def test_a_refused_event_is_counted_but_is_no_loss(link: tuple[Link, StandInSupervisor]) -> None:
    ours, _ = link
    ours.reject("invalid_field")
    assert ours.counters.dropped == {"invalid_field": 1} and ours.take_losses() == 0


def test_a_dead_flusher_is_replaced_with_the_next_generation(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = link
    fill(ours, 1)
    first = supervisor.accept()
    first.send(proto.hello(4, False))
    assert read_all(first) == [event(0)]
    supervisor.die()
    first.close()
    fill(ours, 1, 1)  # into the pipe, which nobody reads now
    ours.read_waiting()  # the periodic check notices the hang-up and takes it back
    assert list(ours.buffer) == [event(1) + proto.END] and ours.sock is None
    assert ours.drain(deadline=None)  # restarts, reconnects, sends
    second = supervisor.accept()
    second.send(proto.hello(5, False))
    ours.read_waiting()
    assert supervisor.restarts == 1 and ours.generation == 5
    assert ours.drain(deadline=None)
    assert read_all(second) == [event(1)]
    # The first flusher never confirmed E00000: it may have taken it along.
    assert ours.counters.dropped == {"flusher_gone": 1} and ours.take_losses() == 1


def test_a_late_reply_is_skipped_by_its_request_id(link: tuple[Link, StandInSupervisor]) -> None:
    ours, supervisor = link
    fill(ours, 1)
    conn = supervisor.accept()
    conn.send(proto.hello(0, False))
    conn.send(proto.ack(999, False))  # the answer to an earlier request that timed out
    request_id_of_next = 1
    conn.send(proto.ack(request_id_of_next, True))
    reply = ours.request(proto.FLUSH, deadline=None)
    assert reply is not None and reply.kind == proto.ACK and reply.ok
    assert read_all(conn) == [event(0), proto.request(proto.FLUSH, request_id_of_next)]


def test_a_request_whose_flusher_ends_before_answering_is_asked_of_the_next_one(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = link
    ours.connect_now()
    heard: list[bytes] = []

    def flusher_killed_after_reading_the_request() -> None:
        first = supervisor.accept()
        first.send(proto.hello(1, False))
        heard.append(first.sock.recv(proto.MAX_MESSAGE_BYTES))
        supervisor.die()
        first.close()
        poll_until(lambda: supervisor.listener is not None, DEADLINE_S, "a restart")
        second = supervisor.accept()
        second.send(proto.hello(2, False))
        heard.append(second.sock.recv(proto.MAX_MESSAGE_BYTES))
        second.send(proto.ack(2, True))

    flusher = threading.Thread(target=flusher_killed_after_reading_the_request, daemon=True)
    flusher.start()
    reply = ours.request(proto.FLUSH, deadline=time.monotonic() + DEADLINE_S)
    flusher.join(DEADLINE_S)
    assert heard == [proto.request(proto.FLUSH, 1), proto.request(proto.FLUSH, 2)]
    assert reply is not None and reply.ok and supervisor.restarts == 1
    assert ours.take_losses() == 0  # it had confirmed everything: nothing was lost


def test_a_request_times_out_when_no_answer_comes(link: tuple[Link, StandInSupervisor]) -> None:
    import time

    ours, supervisor = link
    fill(ours, 1)
    supervisor.accept()
    assert ours.request(proto.STATS, deadline=time.monotonic() + 0.05) is None


def test_a_forked_child_forgets_the_parents_buffer_and_counters(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = link
    fill(ours, 1)
    supervisor.accept()
    ours.buffer.append(b"E-parent")
    ours.lose("buffer_full")
    ours.forget_parent()
    assert ours.sock is None and not ours.buffer
    assert ours.counters.queued == 0 and ours.take_losses() == 0


def test_connecting_to_a_flusher_whose_backlog_is_full_never_blocks() -> None:
    import time

    config = Config(api_key="unit-key")
    address = private_socket_path()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    listener.listen(0)  # never accepted: the backlog fills at once
    waiting = []
    try:
        with pytest.raises(BlockingIOError):
            for _ in range(16):
                waiting.append(proto.connect(address))
        ours = Link(config, Supervisor(config, address, LOG), LOG)
        started = time.monotonic()
        ours.send(b"E00000")
        assert time.monotonic() - started < 1.0  # generous: a blocking connect waits forever
        assert list(ours.buffer) == [b"E00000"] and ours.sock is None
    finally:
        for sock in waiting:
            sock.close()
        listener.close()


# -- what a flusher that died took with it ---------------------------------------------------
def ended_after(link: tuple[Link, StandInSupervisor], tracked: int, *said: bytes) -> Link:
    """``tracked`` events sent, the flusher says ``said`` and closes; the link notices."""
    ours, supervisor = link
    fill(ours, tracked)
    peer = supervisor.accept()
    assert len(read_all(peer)) == tracked  # taken in, as a flusher does
    for message in (proto.hello(0, False), *said):
        peer.send(message)
    peer.close()
    ours.read_waiting()
    assert ours.sock is None
    return ours


def test_events_the_flusher_never_confirmed_are_lost_with_it(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours = ended_after(link, 5, proto.confirmed(3, 0))
    assert ours.counters.dropped == {"flusher_gone": 2} and ours.take_losses() == 2


def test_a_goodbye_confirms_what_was_read_and_reports_an_untold_loss(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours = ended_after(link, 5, proto.confirmed(2, 0), proto.bye(5, 1))
    assert ours.counters.dropped == {}  # counted by the flusher, under its own reason
    assert ours.take_losses() == 1  # but the next flush() says False


def test_a_goodbye_that_left_events_undelivered_confirms_nothing_more(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours = ended_after(link, 5, proto.confirmed(2, 0), proto.bye(0, 0))
    assert ours.counters.dropped == {"flusher_gone": 3} and ours.take_losses() == 3


def test_a_flush_answer_confirms_everything_sent_before_it(
    link: tuple[Link, StandInSupervisor],
) -> None:
    ours, supervisor = link
    fill(ours, 4)
    peer = supervisor.accept()
    assert len(read_all(peer)) == 4
    peer.send(proto.confirmed(1, 1))
    peer.send(proto.ack(1, False))  # the answer to the flush below: it reports the loss
    reply = ours.request(proto.FLUSH, deadline=None)
    assert reply is not None and not reply.ok
    peer.close()
    ours.read_waiting()
    assert ours.sock is None and ours.counters.dropped == {} and ours.take_losses() == 0


def test_a_reply_that_comes_after_its_request_timed_out_is_not_taken_for_the_next(
    link: tuple[Link, StandInSupervisor],
) -> None:
    import time

    ours, supervisor = link
    fill(ours, 1)
    peer = supervisor.accept()
    assert ours.request(proto.STATS, deadline=time.monotonic() + 0.05) is None  # request 1
    peer.send(proto.stats_reply(1, b"{}"))  # its answer, late
    peer.send(proto.ack(2, True))  # the answer to the flush below
    reply = ours.request(proto.FLUSH, deadline=None)
    assert reply is not None and (reply.kind, reply.request_id) == (proto.ACK, 2)
    peer.close()
