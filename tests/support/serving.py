"""A flusher serving in a thread of the test process, with a fake poster (no HTTP).

A small cousin of the harness in the flusher's role tests, for tests that
only need to track events, flush and read the counters.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from support.fakes import FakePoster, Script, private_socket_path
from trubrics_mp import _protocol as proto
from trubrics_mp._config import Config
from trubrics_mp._flusher import Flusher

DEADLINE_S = 10.0


class ServingFlusher:
    """``Flusher.serve()`` in a thread, and one client connection to it."""

    def __init__(self, script: Script, **settings: Any) -> None:
        options = {"api_key": "unit-key", "host": "http://127.0.0.1:9", **settings}
        self.config = Config(**options)
        self.poster = FakePoster(script)
        address = private_socket_path()
        listener = proto.bind_listener(address)
        self.flusher = Flusher(self.config, listener, 1, poster=self.poster)
        self.thread = threading.Thread(target=self.flusher.serve, daemon=True)
        self.thread.start()
        self.sock = proto.connect(address)
        self.sock.setblocking(True)
        self.sock.settimeout(DEADLINE_S)
        self.sock.recv(proto.MAX_MESSAGE_BYTES)  # hello
        self._ids = iter(range(1, 1_000_000))

    def track(self, event: dict[str, Any]) -> None:
        self.sock.send(proto.EVENT + json.dumps(event).encode())

    def ask(self, kind: bytes) -> proto.Reply:
        request_id = next(self._ids)
        self.sock.send(proto.request(kind, request_id))
        while True:
            reply = proto.parse_reply(self.sock.recv(proto.MAX_MESSAGE_BYTES))
            if reply.request_id == request_id:
                return reply

    def flush(self) -> bool:
        return self.ask(proto.FLUSH).ok

    def stats(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.ask(proto.STATS).body)
        return found

    def stop(self) -> None:
        self.sock.close()
        if self.thread.is_alive():
            self.flusher.stop("test over")
            self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "the flusher loop did not leave"
