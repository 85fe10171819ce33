"""The clients under test, behind one small interface, all sending the same event.

Peers: ``trubrics_mp`` (this project), ``trubrics`` (the official SDK 1.8.5),
``posthog`` and ``segment`` (``segment-analytics-python``). Each is imported
only when made, so a process measures only the peer it runs.

Settings: batch size 100 for every peer; flush intervals at the smallest
value each peer allows or defaults to for a fast send (trubrics 1.8.5: 1 s, its
minimum; PostHog and Segment: 0.5 s; trubrics_mp: 1 s). Everything else is
each peer's default. Peers log through their own loggers with their default
levels; the benchmark sends every process's stderr to a log file.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

PEERS = ("trubrics_mp", "trubrics", "posthog", "segment")
# track()'s cost is measured for one more: trubrics_mp with the standard json encoder
# (TRUBRICS_MP_JSON=json), as without the fast extra; trubrics_mp uses orjson when installed.
LATENCY_PEERS = (*PEERS, "trubrics_mp_json")
BATCH_SIZE = 100
API_KEY = "bench-api-key"
USER_ID = "user-42"
EVENT = "Generation"
TEXT = ("The quick brown fox jumps over the lazy dog. " * 5)[:200]
PROPERTIES: dict[str, Any] = {
    "$thread_id": "thread-7f3a9c",
    "$assistant_id": "gpt-4o-mini",
    "$text": TEXT,
    "cost": 0.00042,
    "tokens": 321,
}
assert len(TEXT) == 200


def keyed_properties(key: str) -> dict[str, Any]:
    """The benchmark event's properties plus a ``bench_key`` (the sink counts distinct keys)."""
    return {**PROPERTIES, "bench_key": key}


class Peer:
    """One client under test: ``track(props)``, ``flush()``, ``close()``."""

    name = ""

    def __init__(self, client: Any) -> None:
        self.client = client

    def track(self, props: dict[str, Any]) -> None:
        raise NotImplementedError

    def flush(self, timeout: float) -> None:
        """Ask the peer to send what it holds (the peer decides whether it blocks)."""
        raise NotImplementedError

    def close(self, timeout: float) -> None:
        raise NotImplementedError

    def flusher_pid(self) -> Optional[int]:
        """The pid of a separate flusher process, if the peer has one."""
        return None


class TrubricsMpPeer(Peer):
    name = "trubrics_mp"

    def track(self, props: dict[str, Any]) -> None:
        self.client.track(USER_ID, EVENT, props)

    def flush(self, timeout: float) -> None:
        self.client.flush(timeout=timeout)

    def close(self, timeout: float) -> None:
        self.client.close(timeout=timeout)

    def flusher_pid(self) -> Optional[int]:
        pid: Optional[int] = self.client.stats().flusher_pid
        return pid


class TrubricsPeer(Peer):
    """The official SDK: ``flush()`` is synchronous; ``close()`` joins its thread."""

    name = "trubrics"

    def track(self, props: dict[str, Any]) -> None:
        self.client.track(USER_ID, EVENT, props)

    def flush(self, timeout: float) -> None:
        self.client.flush()

    def close(self, timeout: float) -> None:
        self.client.close()


class PosthogPeer(Peer):
    name = "posthog"

    def track(self, props: dict[str, Any]) -> None:
        self.client.capture(EVENT, distinct_id=USER_ID, properties=props)

    def flush(self, timeout: float) -> None:
        self.client.flush(timeout_seconds=timeout)

    def close(self, timeout: float) -> None:
        self.client.flush(timeout_seconds=timeout)
        self.client.shutdown()


class SegmentPeer(Peer):
    """``flush()`` is ``queue.join()``: unbounded, and it hangs forever in a forked child."""

    name = "segment"

    def track(self, props: dict[str, Any]) -> None:
        self.client.track(user_id=USER_ID, event=EVENT, properties=props)

    def flush(self, timeout: float) -> None:
        self.client.flush()

    def close(self, timeout: float) -> None:
        self.client.shutdown()


def _make_trubrics_mp(host: str, shutdown_timeout: float) -> Peer:
    from trubrics_mp import Trubrics

    client = Trubrics(
        API_KEY,
        host=host,
        flush_interval=1.0,
        flush_at=BATCH_SIZE,
        shutdown_timeout=shutdown_timeout,
    )
    return TrubricsMpPeer(client)


def _make_trubrics_mp_json(host: str, shutdown_timeout: float) -> Peer:
    from trubrics_mp._serialize import JSON_ENV

    os.environ[JSON_ENV] = "json"  # this job's own process: read when the client is built
    return _make_trubrics_mp(host, shutdown_timeout)


def _make_trubrics_mp_spool(host: str, shutdown_timeout: float) -> Peer:
    from trubrics_mp._address import RUNTIME_DIR_ENV, SPOOL_DIR_ENV

    # This job's own process: read when the client is built. Producers of one run share
    # the runtime directory (one flusher), so they share this spool too.
    os.environ[SPOOL_DIR_ENV] = os.path.join(os.environ[RUNTIME_DIR_ENV], "spool")
    return _make_trubrics_mp(host, shutdown_timeout)


def _make_trubrics(host: str, shutdown_timeout: float) -> Peer:
    from trubrics import Trubrics

    return TrubricsPeer(Trubrics(API_KEY, host=host, flush_interval=1, flush_batch_size=BATCH_SIZE))


def _make_posthog(host: str, shutdown_timeout: float) -> Peer:
    from posthog import Posthog

    client = Posthog(API_KEY, host=host, flush_at=BATCH_SIZE, flush_interval=0.5)
    return PosthogPeer(client)


def _make_segment(host: str, shutdown_timeout: float) -> Peer:
    from segment.analytics import Client

    client = Client(API_KEY, host=host, upload_size=BATCH_SIZE, upload_interval=0.5)
    return SegmentPeer(client)


_MAKERS: dict[str, Callable[[str, float], Peer]] = {
    "trubrics_mp": _make_trubrics_mp,
    "trubrics_mp_json": _make_trubrics_mp_json,
    "trubrics_mp_spool": _make_trubrics_mp_spool,
    "trubrics": _make_trubrics,
    "posthog": _make_posthog,
    "segment": _make_segment,
}


def make_peer(name: str, host: str, shutdown_timeout: float = 10.0) -> Peer:
    """A client of peer ``name`` posting to ``host`` (a sink URL with a label)."""
    return _MAKERS[name](host, shutdown_timeout)


def import_peer(name: str) -> None:
    """Import a peer's package without making a client (for memory baselines)."""
    module = {"trubrics_mp": "trubrics_mp", "trubrics": "trubrics", "posthog": "posthog"}
    __import__(module.get(name, "segment.analytics"))


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
