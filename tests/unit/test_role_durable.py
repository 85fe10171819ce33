"""The flusher's spool role (``_durable``), in process: the harness of
``support/flusher_harness.py`` (a real flusher loop in a thread, raw client sockets, a
fake poster) with ``spool_dir`` set to a private directory.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from support.fakes import ANSWER_200, always
from support.flusher_harness import DEADLINE_S, Harness, confirmations, replies_until_closed

from trubrics_mp import Trubrics
from trubrics_mp import _protocol as proto
from trubrics_mp._address import SPOOL_DIR_ENV
from trubrics_mp._config import MIB, RETRY_FOR_S, SPOOL_RETRY_FOR_S, Config
from trubrics_mp._durable import Durable
from trubrics_mp._retry import Outcome
from trubrics_mp._route import Route
from trubrics_mp._servers import poll_until
from trubrics_mp._spool import Spool, route_tag

TOKEN = "0123456789abcdef"  # a connection's (see _resend)

DOWN = always(503)


class Api:
    """A script that fails until ``up()``, then answers 200 and records what it took."""

    def __init__(self) -> None:
        self.is_up = False
        self.taken: list[tuple[str, int]] = []
        self.keys: set[str] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        self.is_up = True

    def __call__(self, number: int, endpoint: str, events: list[dict[str, Any]]) -> Outcome:
        if not self.is_up:
            return Outcome(503)
        with self._lock:
            self.taken += [(e["src"], e["seq"]) for e in events]
        return Outcome(200)


def spool_events(h: Harness, sock: socket.socket) -> Any:
    return h.stats(sock).get("spool_events")


def test_events_are_on_disk_while_the_api_fails_and_leave_it_once_delivered(
    harness: Any, tmp_path: Path
) -> None:
    api = Api()
    h = harness(api, spool_dir=str(tmp_path / "spool"))
    sock = h.connect()
    for seq in range(12):
        h.track(sock, seq)
    poll_until(lambda: spool_events(h, sock) == 12, DEADLINE_S, "12 events on disk")
    assert h.stats(sock)["spool"] == "on" and h.stats(sock)["spool_bytes"] > 0
    api.up()
    assert h.ask(sock, proto.FLUSH).ok
    poll_until(lambda: spool_events(h, sock) == 0, DEADLINE_S, "the spool emptied")
    assert sorted(api.taken) == [("t", seq) for seq in range(12)]


def test_a_flusher_stopped_during_an_outage_leaves_its_events_to_the_next_one(
    harness: Any, tmp_path: Path
) -> None:
    directory = str(tmp_path / "spool")
    old = harness(DOWN, spool_dir=directory, shutdown_timeout_s=0.2)
    sock = old.connect()
    for seq in range(7):
        old.track(sock, seq)
    poll_until(lambda: spool_events(old, sock) == 7, DEADLINE_S, "7 events on disk")
    old.stop()
    assert old.flusher.counters.dropped == {}  # kept on disk: no shutdown_timeout loss
    replies = replies_until_closed(sock)
    byes = [proto.settled_counts(r) for r in replies if r.kind == proto.BYE]
    assert byes == [(7, 0, (0, 7))]  # all 7 on disk, all by the socket
    assert (7, 0) in confirmations(replies)  # heard as soon as they were on disk

    api = Api()
    api.up()
    new = harness(api, spool_dir=directory)  # a deploy: the next flusher, the same spool
    other = new.connect()
    assert new.ask(other, proto.FLUSH).ok  # it covers what the new flusher took from disk
    poll_until(lambda: spool_events(new, other) == 0, DEADLINE_S, "the spool emptied")
    assert sorted(api.taken) == [("t", seq) for seq in range(7)]  # each once


def test_events_of_another_key_wait_on_disk_until_a_client_with_that_key_connects(
    harness: Any, tmp_path: Path
) -> None:
    directory = str(tmp_path / "spool")
    route = proto.route(TOKEN, Route("http://127.0.0.1:9", "other-key", 5, 3600.0).to_bytes())
    old = harness(DOWN, spool_dir=directory, shutdown_timeout_s=0.2)
    sock = old.connect()
    sock.send(route)
    for seq in range(3):
        old.track(sock, seq, src="other")
    poll_until(lambda: spool_events(old, sock) == 3, DEADLINE_S, "3 events on disk")
    old.stop()

    new = harness(ANSWER_200, spool_dir=directory)
    mine = new.connect()  # the flusher's own key: nothing of the other key is sent for it
    assert new.ask(mine, proto.FLUSH).ok
    assert new.poster.count() == 0 and spool_events(new, mine) == 3
    theirs = new.connect()
    theirs.send(route)
    assert new.ask(theirs, proto.FLUSH).ok
    poll_until(lambda: new.poster.count() >= 1, DEADLINE_S, "the other key's events")
    (call,) = new.poster.calls
    assert call.route is not None and call.route.api_key == "other-key"
    assert sorted((e["src"], e["seq"]) for e in call.events) == [("other", s) for s in range(3)]
    poll_until(lambda: spool_events(new, mine) == 0, DEADLINE_S, "the spool emptied")


def test_a_directory_others_may_write_is_refused_and_events_stay_in_memory(
    harness: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    os.chmod(directory, 0o777)
    h = harness(ANSWER_200, spool_dir=str(directory))
    sock = h.connect()
    h.track(sock, 0)
    assert h.ask(sock, proto.FLUSH).ok
    stats = h.stats(sock)
    assert stats["spool"] == "unavailable: open_to_others" and "spool_events" not in stats
    assert h.delivered() == [("t", 0)]
    assert os.listdir(directory) == []


def test_a_second_flusher_on_the_same_directory_keeps_its_events_in_memory(
    harness: Any, tmp_path: Path
) -> None:
    directory = str(tmp_path / "spool")
    first = harness(ANSWER_200, spool_dir=directory)
    second = harness(ANSWER_200, spool_dir=directory)
    sock = second.connect()
    second.track(sock, 0)
    assert second.ask(sock, proto.FLUSH).ok
    assert second.stats(sock)["spool"] == "unavailable: busy"
    assert first.stats(first.connect())["spool"] == "on"
    assert second.delivered() == [("t", 0)]


def test_a_batch_dropped_for_good_leaves_the_spool_too(harness: Any, tmp_path: Path) -> None:
    h = harness(always(400), spool_dir=str(tmp_path / "spool"))
    sock = h.connect()
    for seq in range(5):
        h.track(sock, seq)
    assert not h.ask(sock, proto.FLUSH).ok
    assert h.stats(sock)["dropped"] == {"http_400": 5}
    poll_until(lambda: spool_events(h, sock) == 0, DEADLINE_S, "the dropped batch acked")


def test_without_a_spool_the_stats_say_off(harness: Any) -> None:
    h = harness(ANSWER_200)
    assert h.stats(h.connect())["spool"] == "off"


def test_the_spool_setting_is_an_argument_or_the_environment_read_at_construction(
    monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SPOOL_DIR_ENV, "from-env")
    by_env = Trubrics(api_key="k", disabled=True)._config
    assert by_env.spool_dir == str(tmp_path / "from-env")  # absolute: the flusher's cwd differs
    assert by_env.retry_for_s == SPOOL_RETRY_FOR_S
    by_argument = Trubrics(api_key="k", disabled=True, spool_dir=tmp_path / "arg")._config
    assert by_argument.spool_dir == str(tmp_path / "arg")
    assert Trubrics(api_key="k", disabled=True, retry_for=60)._config.retry_for_s == 60
    monkeypatch.delenv(SPOOL_DIR_ENV)
    without = Trubrics(api_key="k", disabled=True)._config
    assert (without.spool_dir, without.retry_for_s) == ("", RETRY_FOR_S)


def test_past_the_bound_in_memory_events_go_on_disk_only_and_come_back_in_order(
    harness: Any, tmp_path: Path
) -> None:
    """API down, 2 MB of events against a 1 MiB bound: reading never pauses; what does
    not fit in memory is spilled to disk and read back as room comes."""
    api = Api()
    h = harness(api, spool_dir=str(tmp_path / "spool"), flush_at=20, max_queue_bytes=MIB)
    sock = h.connect()
    pad = "x" * 5_000
    for seq in range(400):
        sock.send(proto.EVENT + json.dumps({"src": "big", "seq": seq, "pad": pad}).encode())
    poll_until(lambda: spool_events(h, sock) == 400, DEADLINE_S, "400 events on disk")
    stats = h.stats(sock)
    assert stats["held"] <= MIB // 5_000 + 1  # in memory: the bound; the rest on disk only
    assert stats["dropped"] == {}
    api.up()
    assert h.ask(sock, proto.FLUSH).ok  # it covers the spilled events too
    assert sorted(api.taken) == [("big", seq) for seq in range(400)]
    poll_until(lambda: spool_events(h, sock) == 0, DEADLINE_S, "the spool emptied")


def test_events_of_unknown_keys_park_up_to_a_quarter_of_the_bound_the_rest_stays_on_disk(
    tmp_path: Path,
) -> None:
    config = Config(
        api_key="mine",
        host="http://127.0.0.1:9",
        spool_dir=str(tmp_path / "s"),
        max_queue_bytes=MIB,
    )
    event = b'{"pad": "' + b"x" * 10_000 + b'"}'
    with Spool.open(config.spool_dir) as spool:
        for _ in range(40):  # 400 KB of another key's events: more than MIB / 4
            assert spool.append("publish_events", route_tag(config.host, "theirs"), [event]).ok
    durable = Durable.open(config, logging.getLogger("test"))
    try:
        assert durable.replay_some(MIB) == []  # nothing of the flusher's own key
        assert durable.parked_bytes <= MIB // 4 < durable.parked_bytes + len(event)
        parked = durable.parked_bytes // len(event)
        assert parked + durable.left_on_disk == 40 and durable.left_on_disk > 0
        theirs = durable.learn(Route(config.host, "theirs", 20, 10.0))  # a client connects
        assert len(theirs) == parked and durable.parked_bytes == 0
        assert all(route is not None and route.api_key == "theirs" for _, route in theirs)
    finally:
        durable.close()


def test_with_nobody_connected_a_flusher_leaves_its_undelivered_events_on_disk(
    harness: Any, tmp_path: Path
) -> None:
    """API down: once no process has been connected for ``linger``, the flusher does
    not retry for hours on its own; it ends within ``shutdown_timeout`` and its events
    wait on disk for the next flusher (counted as kept, not lost)."""
    directory = str(tmp_path / "spool")
    h = harness(DOWN, spool_dir=directory, linger_s=0.2, shutdown_timeout_s=0.2)
    sock = h.connect()
    for seq in range(5):
        h.track(sock, seq)
    poll_until(lambda: spool_events(h, sock) == 5, DEADLINE_S, "5 events on disk")
    sock.close()
    h.thread.join(DEADLINE_S)
    assert not h.thread.is_alive(), "the flusher retried on with nobody connected"
    assert h.flusher.counters.dropped == {}
    with Spool.open(directory) as spool:
        assert spool.stats().events == 5
