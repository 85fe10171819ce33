"""A real flusher loop in a thread, for the unit tests of its roles.

:class:`Harness` runs ``Flusher.serve()`` in a thread (no signals) with a
fake poster, and talks to it through ``SOCK_SEQPACKET`` connections made as
client processes make them. The ``harness`` fixture (``tests/unit/conftest.py``)
makes them and stops every one it made.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any, Callable, Optional

from trubrics_mp import _protocol as proto
from trubrics_mp._config import Config
from trubrics_mp._flusher import Flusher

from .fakes import ANSWER_200, FakePoster, Script, private_socket_path

DEADLINE_S = 10.0


class Harness:
    """A flusher serving in a thread, and helpers to talk to it."""

    def __init__(self, script: Script, **settings: Any) -> None:
        options = {
            "flush_at": 5,
            "flush_interval_s": 3600.0,
            "shutdown_timeout_s": 5.0,
            "linger_s": 3600.0,
        }
        self.config = Config(
            api_key="unit-key", host="http://127.0.0.1:9", **{**options, **settings}
        )
        self.address = private_socket_path()
        self.poster = FakePoster(script)
        listener = proto.bind_listener(self.address)
        self.flusher = Flusher(self.config, listener, 3, poster=self.poster)
        self.thread = threading.Thread(target=self.flusher.serve, daemon=True)
        self.thread.start()
        self._ids = iter(range(1, 1_000_000))

    def connect(self) -> socket.socket:
        sock = proto.connect(self.address)
        sock.setblocking(True)
        sock.settimeout(DEADLINE_S)
        hello = proto.parse_reply(sock.recv(proto.MAX_MESSAGE_BYTES))
        assert hello.kind == proto.HELLO and proto.hello_generation(hello) == 3
        return sock

    def track(
        self, sock: socket.socket, seq: int, src: str = "t", kind: bytes = proto.EVENT
    ) -> None:
        sock.send(kind + json.dumps({"src": src, "seq": seq}).encode())

    def ask(self, sock: socket.socket, kind: bytes) -> proto.Reply:
        request_id = next(self._ids)
        sock.send(proto.request(kind, request_id))
        while True:
            reply = proto.parse_reply(sock.recv(proto.MAX_MESSAGE_BYTES))
            if reply.request_id == request_id:
                return reply

    def stats(self, sock: socket.socket) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.ask(sock, proto.STATS).body)
        return result

    def delivered(self) -> list[tuple[str, int]]:
        return [(e["src"], e["seq"]) for e in self.poster.delivered()]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.flusher.stop("test over")
            self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "the flusher loop did not leave"


@contextlib.contextmanager
def harnesses() -> Iterator[Callable[..., Harness]]:
    """A maker of harnesses (``make(script=ANSWER_200, **settings)``); each one stopped after."""
    made: list[Harness] = []

    def make(script: Script = ANSWER_200, **settings: Any) -> Harness:
        made.append(Harness(script, **settings))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            each.stop()


def replies_before(h: Harness, sock: socket.socket) -> list[proto.Reply]:
    """Everything the flusher sent ``sock`` before it answered a stats request now."""
    request_id = next(h._ids)
    sock.send(proto.request(proto.STATS, request_id))
    seen: list[proto.Reply] = []
    while True:
        reply = proto.parse_reply(sock.recv(proto.MAX_MESSAGE_BYTES))
        if reply.kind == proto.STATS and reply.request_id == request_id:
            return seen
        seen.append(reply)


def confirmations(replies: list[proto.Reply]) -> list[Optional[tuple[int, int]]]:
    """The ``(N, D)`` of each confirmation."""
    counts = [proto.settled_counts(r) for r in replies if r.kind == proto.CONFIRMED]
    return [None if c is None else c[:2] for c in counts]


def replies_until_closed(sock: socket.socket) -> list[proto.Reply]:
    seen: list[proto.Reply] = []
    while True:
        try:
            message = sock.recv(proto.MAX_MESSAGE_BYTES)
        except ConnectionResetError:
            continue
        if not message:
            return seen
        seen.append(proto.parse_reply(message))
