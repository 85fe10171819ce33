"""Delivery against a real HTTP API that fails on purpose: retries, budgets, drops, logs.

The client lives in the pytest process here (its flusher is a real child
process); nothing in these tests forks the pytest process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any, Callable

import psutil
import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.processes import flushers, poll_until

from trubrics_mp import Trubrics
from trubrics_mp._config import MIB

API_KEY = "sk-delivery-test-4d2b"
ClientFactory = Callable[..., Trubrics]


@pytest.fixture
def make_client(collector: CollectorProcess) -> Iterator[ClientFactory]:
    made: list[Trubrics] = []

    def factory(**options: Any) -> Trubrics:
        settings = {"flush_at": 10, "flush_interval": 0.2, **options}
        client = Trubrics(API_KEY, collector.url, **settings)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close(timeout=30)


def track(client: Trubrics, src: str, count: int) -> None:
    for seq in range(count):
        client.track(user_id="u", event="Sign up", properties={"src": src, "seq": seq})


def test_transient_failures_are_retried_and_delivered_once(
    collector: CollectorProcess, make_client: ClientFactory
) -> None:
    collector.set_faults(fail_status=503, fail_count=3)
    client = make_client(flush_at=5)
    track(client, "retried", 5)
    assert client.flush(timeout=60) is True
    stats = client.stats()
    assert stats.retried_requests == 3
    assert stats.delivered == 5
    wait_exactly_once(collector, {"retried": 5})


def test_retry_after_is_honoured(
    collector: CollectorProcess, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The retry is scheduled when the server said (2 s), not after the backoff (0.25-0.5 s)."""
    collector.set_faults(fail_status=429, fail_count=1, retry_after="2")
    logger = logging.getLogger("test.retry_after")
    logger.setLevel(logging.WARNING)  # the flusher logs each retry it schedules
    client = make_client(flush_at=1, logger=logger)
    track(client, "later", 1)
    assert client.flush(timeout=60) is True
    assert client.stats().retried_requests == 1
    err = caplog.text
    scheduled = re.search(r"failed \(HTTP 429\): retry 1 for 1 events in ([\d.]+) s", err)
    assert scheduled is not None, err
    assert 1.5 < float(scheduled.group(1)) <= 2.0  # logged just after the decision
    wait_exactly_once(collector, {"later": 1})


def test_a_spent_retry_budget_drops_the_batch_and_counts_it(
    collector: CollectorProcess, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    collector.set_faults(down=True)
    client = make_client(flush_at=3, max_retries=2)
    track(client, "doomed", 3)
    assert client.flush(timeout=60) is False
    stats = client.stats()
    assert stats.dropped == {"retries_exhausted": 3}
    assert stats.failed_batches == 1 and stats.retried_requests == 2
    assert "dropped 3 events for /publish_events (retries_exhausted)" in caplog.text


def test_a_client_error_drops_only_its_batch_and_logs_the_detail(
    collector: CollectorProcess, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    collector.set_faults(fail_status=422, fail_count=1)
    client = make_client(flush_at=2)
    track(client, "refused", 2)
    assert client.flush(timeout=60) is False
    track(client, "fine", 2)
    assert client.flush(timeout=60) is True
    assert client.stats().dropped == {"http_422": 2}
    assert "HTTP 422: injected failure 1 of 1" in caplog.text
    assert [e["properties"]["src"] for e in collector.events()] == ["fine", "fine"]


def test_a_bad_api_key_is_logged_once_and_the_key_never(
    collector: CollectorProcess, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    collector.set_faults(fail_status=401, down=True)
    client = make_client(flush_at=1)
    track(client, "unauthorized", 3)
    assert client.flush(timeout=60) is False
    err = caplog.text
    assert err.count("the API key was rejected (HTTP 401)") == 1
    assert API_KEY not in err
    assert API_KEY not in repr(client)


def test_events_wait_while_the_api_is_down_and_arrive_once_when_it_is_back(
    collector: CollectorProcess, make_client: ClientFactory
) -> None:
    collector.set_faults(down=True)
    client = make_client(flush_at=10)
    track(client, "patient", 50)
    poll_until(lambda: (client.stats().retried_requests or 0) >= 2, 60, "retries to start")
    assert client.stats().dropped == {}
    collector.clear_faults()
    assert client.flush(timeout=120) is True
    wait_exactly_once(collector, {"patient": 50})


def test_past_every_bound_the_process_that_lost_events_counts_them(
    collector: CollectorProcess, make_client: ClientFactory
) -> None:
    """API down: the flusher holds its bound, then the kernel, then the process buffer."""
    collector.set_faults(down=True)
    client = make_client(flush_at=100, max_queue_bytes=MIB, process_buffer_bytes=100_000)
    pad = "x" * 10_000
    n = 1_500  # 15 MB: more than the flusher, the socket buffers and the process hold
    for seq in range(n):
        client.track(user_id="u", event="e", properties={"src": "bounded", "seq": seq, "p": pad})
    local = client.stats(flusher=False)
    assert local.dropped.get("buffer_full", 0) > 0 and "queue_full" not in local.dropped
    assert local.buffered * 10_000 <= 100_000
    # (stats() would wait here: the flusher reads no connection while it holds its bound)
    collector.clear_faults()
    assert client.flush(timeout=120) is False  # some of this process's events were dropped
    stats = client.stats()
    assert stats.delivered is not None
    assert stats.delivered + stats.dropped["buffer_full"] == n  # every event accounted for
    assert len(collector.events()) == stats.delivered


def test_flusher_logs_reach_the_users_logger_name_and_level(
    collector: CollectorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("myapp.analytics")
    logger.setLevel(logging.WARNING)
    collector.set_faults(fail_status=503, fail_count=1)
    with Trubrics(API_KEY, collector.url, flush_at=1, logger=logger) as client:
        track(client, "logged", 1)
        assert client.flush(timeout=60)
        flusher = client.stats().flusher_pid
    ours = [r for r in caplog.records if r.name == "myapp.analytics" and r.process == flusher]
    assert any(
        r.levelno == logging.WARNING and "POST /publish_events failed (HTTP 503)" in r.getMessage()
        for r in ours
    ), caplog.text
    assert all(r.levelno >= logging.WARNING for r in ours)


def test_a_quiet_logger_keeps_the_flusher_quiet(
    collector: CollectorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    collector.set_faults(fail_status=503, fail_count=1)
    with Trubrics(API_KEY, collector.url, flush_at=1) as client:  # default: ERROR
        track(client, "quiet", 1)
        assert client.flush(timeout=60)
    assert not [r for r in caplog.records if r.levelno < logging.ERROR]


def test_a_bad_event_never_costs_another_its_delivery(
    collector: CollectorProcess, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(flush_at=3)
    client.track(user_id="u", event="e", properties={"src": "ok", "seq": 0})
    client.track(user_id="u", event="e", properties={"src": "ok", "seq": 99, "x": object()})
    client.track(user_id=None, event="e", properties={"src": "ok", "seq": 98})  # type: ignore[arg-type]
    client.track_llm(user_id="u", prompt=1, generation="g")  # type: ignore[arg-type]
    client.track(user_id="u", event="e", properties={"src": "ok", "seq": 1})
    client.track(user_id="u", event="e", properties={"src": "ok", "seq": 2})
    assert client.flush(timeout=60) is True
    wait_exactly_once(collector, {"ok": 3})
    assert client.stats().dropped == {"unserialisable": 1, "invalid_field": 2}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert "track() dropped an invalid event: properties cannot be sent" in errors[0]
    assert "track_llm() dropped an invalid event: prompt must be a string" in errors[2]


def test_a_disabled_client_starts_no_process_and_sends_nothing(collector: CollectorProcess) -> None:
    client = Trubrics(API_KEY, collector.url, disabled=True)
    track(client, "disabled", 3)
    assert [p.pid for p in psutil.Process().children()] == [collector.pid]
    assert client.flush() is True and client.close() is True
    assert client.stats().dropped == {"disabled": 3}
    assert collector.events() == []


def test_clients_with_the_same_settings_share_one_flusher(
    collector: CollectorProcess, make_client: ClientFactory
) -> None:
    first = make_client()
    second = make_client()
    track(first, "first", 2)
    track(second, "second", 2)
    assert second.flush(timeout=60) and first.flush(timeout=60)
    assert first.stats().flusher_pid == second.stats().flusher_pid
    assert [p.pid for p in flushers()] == [first.stats().flusher_pid]
    wait_exactly_once(collector, {"first": 2, "second": 2})


def test_close_is_final_and_idempotent(
    collector: CollectorProcess, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    track(client, "closed", 2)
    assert client.close(timeout=60) is True
    assert client.close() is True
    track(client, "late", 1)
    assert client.stats().dropped == {"closed": 1}
    assert client.stats().delivered is None  # no flusher to ask any more
    wait_exactly_once(collector, {"closed": 2})
