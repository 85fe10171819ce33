"""The disk spool with real processes: a real flusher, the real collector (issue 14).

The client lives in the pytest process; its flusher is a real process that
the tests stop with SIGTERM or SIGKILL, as a deploy or the OOM killer would.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.processes import flushers, poll_until

from trubrics_mp import Trubrics

API_KEY = "sk-spool-test-8c1e"
ClientFactory = Callable[..., Trubrics]


@pytest.fixture
def spooled_client(collector: CollectorProcess, tmp_path: Path) -> Iterator[ClientFactory]:
    made: list[Trubrics] = []

    def factory(**options: Any) -> Trubrics:
        settings = {
            "flush_at": 10,
            "flush_interval": 1.0,
            "spool_dir": str(tmp_path / "spool"),
            **options,
        }
        client = Trubrics(API_KEY, collector.url, **settings)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close(timeout=30)


def track(client: Trubrics, src: str, count: int) -> None:
    for seq in range(count):
        client.track(user_id="u", event="Sign up", properties={"src": src, "seq": seq})


def the_flusher(client: Trubrics) -> psutil.Process:
    pid = client.stats().flusher_pid
    (flusher,) = [proc for proc in flushers() if proc.pid == pid]
    return flusher


def test_a_deploy_during_an_outage_leaves_the_events_to_the_next_flusher(
    collector: CollectorProcess, spooled_client: ClientFactory
) -> None:
    """The app stops, its flusher gets SIGTERM with the API down; the next app's delivers."""
    collector.set_faults(down=True)
    old = spooled_client(shutdown_timeout=0.5, linger=0.0)
    track(old, "deploy", 50)
    poll_until(lambda: old.stats().spool_events == 50, 60, "50 events on disk")
    flusher = the_flusher(old)
    assert old.close(timeout=1) is False  # not delivered (yet): close() never says True
    flusher.send_signal(signal.SIGTERM)
    flusher.wait(60)
    assert old.stats(flusher=False).dropped == {}  # on disk: the process counts no loss

    collector.clear_faults()
    new = spooled_client()
    assert new.flush(timeout=60) is True
    wait_exactly_once(collector, {"deploy": 50})
    poll_until(lambda: new.stats().spool_events == 0, 60, "the spool emptied")


def test_a_flusher_killed_holding_events_on_disk_costs_none_of_them(
    collector: CollectorProcess, spooled_client: ClientFactory
) -> None:
    """SIGKILL (as the OOM killer sends it) while the API is down; the next call restarts
    the flusher, which takes the events back from disk."""
    collector.set_faults(down=True)
    client = spooled_client()
    track(client, "killed", 30)
    poll_until(lambda: client.stats().spool_events == 30, 60, "30 events on disk")
    flusher = the_flusher(client)
    flusher.send_signal(signal.SIGKILL)
    flusher.wait(60)
    collector.clear_faults()
    client.track(user_id="u", event="Sign up", properties={"src": "after", "seq": 0})
    assert client.flush(timeout=60) is True
    wait_exactly_once(collector, {"killed": 30, "after": 1})
    stats = client.stats()
    assert stats.flusher_restarts == 1 and stats.dropped == {}
