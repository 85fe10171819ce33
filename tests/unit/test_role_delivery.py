"""Delivery, in process: sender threads, retries, pauses and the retry budget."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.fakes import Call, FakePoster, RunningDelivery, always

from trubrics_mp._batching import Batch
from trubrics_mp._delivery import Delivery
from trubrics_mp._retry import Outcome, RetryPolicy
from trubrics_mp._servers import poll_until

FAST = RetryPolicy(max_retries=1000, backoff_base_s=0.001, backoff_cap_s=0.002)
LOG = logging.getLogger("trubrics_mp.tests")


def batch(n: int, tag: str = "b") -> Batch:
    return Batch("publish_events", [b'{"src":"%s","seq":%d}' % (tag.encode(), n)])


@pytest.fixture
def running() -> Iterator[list[RunningDelivery]]:
    started: list[RunningDelivery] = []
    yield started
    for each in started:
        each.stop()


def test_while_the_api_fails_at_most_one_batch_per_sender_spends_retries(
    running: list[RunningDelivery],
) -> None:
    poster = FakePoster(always(503))
    run = RunningDelivery(poster, FAST, senders=4)
    running.append(run)
    batches = [batch(i) for i in range(8)]
    for each in batches:
        run.delivery.put(each)
    poll_until(lambda: poster.count() >= 60, 10, "60 failed posts")
    touched = {b.id for b in batches if b.attempts > 0}
    assert 1 <= len(touched) <= 4, [b.attempts for b in batches]
    assert all(b.attempts == 0 for b in batches[4:]), "batches behind the head were posted"
    assert run.outcomes() == []  # retries never reach the main loop


def test_after_the_first_failure_only_one_batch_is_in_flight(
    running: list[RunningDelivery],
) -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def script(number: int, endpoint: str, events: list[dict[str, object]]) -> Outcome:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            if number > 4:  # the first four were taken before anything failed
                most = max(most, in_flight)
        release.wait(0.001)
        with lock:
            in_flight -= 1
        return Outcome(503)

    poster = FakePoster(script)
    run = RunningDelivery(poster, FAST, senders=4)
    running.append(run)
    for i in range(8):
        run.delivery.put(batch(i))
    poll_until(lambda: poster.count() >= 40, 10, "40 failed posts")
    assert most == 1


def test_a_recovered_api_gets_every_batch_delivered_once(running: list[RunningDelivery]) -> None:
    poster = FakePoster(always(503))
    run = RunningDelivery(poster, FAST, senders=2)
    running.append(run)
    batches = [batch(i) for i in range(6)]
    for each in batches:
        run.delivery.put(each)
    poll_until(lambda: poster.count() >= 10, 10, "10 failed posts")
    poster.script = always(200)
    poll_until(lambda: len(run.outcomes()) == 6, 10, lambda: f"6 settled, {run.outcomes()}")
    assert all(s.delivered for s in run.outcomes())
    delivered = [e["seq"] for c in poster.calls if c.number > 10 for e in c.events]
    assert sorted(set(delivered)) == list(range(6))
    assert run.delivery.retried_requests >= 10


def test_a_spent_budget_settles_the_batch_as_dropped(running: list[RunningDelivery]) -> None:
    poster = FakePoster(always(500))
    policy = RetryPolicy(max_retries=3, backoff_base_s=0.001, backoff_cap_s=0.001)
    run = RunningDelivery(poster, policy, senders=1)
    running.append(run)
    run.delivery.put(batch(0))
    poll_until(lambda: run.outcomes(), 10, "the batch to settle")
    (settled,) = run.outcomes()
    assert settled.reason == "retries_exhausted" and settled.last.status == 500
    assert poster.count() == 4  # the first attempt and three retries
    assert run.delivery.requests == 4 and run.delivery.retried_requests == 3


@pytest.mark.parametrize(("status", "reason"), [(400, "http_400"), (422, "http_422")])
def test_a_client_error_is_dropped_at_once_and_does_not_pause(
    running: list[RunningDelivery], status: int, reason: str
) -> None:
    poster = FakePoster(lambda n, e, events: Outcome(status if events[0]["seq"] == 0 else 200))
    run = RunningDelivery(poster, FAST, senders=1)
    running.append(run)
    for i in range(3):
        run.delivery.put(batch(i))
    poll_until(lambda: len(run.outcomes()) == 3, 10, "3 settled")
    assert [s.reason for s in run.outcomes()] == [reason, "", ""]
    # One request for the three, refused; then each alone: only the bad one is lost.
    assert poster.count() == 4 and [len(c.events) for c in poster.calls] == [3, 1, 1, 1]


def test_a_refused_key_drops_every_batch_of_its_request(running: list[RunningDelivery]) -> None:
    poster = FakePoster(always(401))
    run = RunningDelivery(poster, FAST, senders=1)
    running.append(run)
    for i in range(3):
        run.delivery.put(batch(i))
    poll_until(lambda: len(run.outcomes()) == 3, 10, "3 settled")
    assert [s.reason for s in run.outcomes()] == ["unauthorized"] * 3
    assert poster.count() <= 3


def test_batches_that_did_not_wait_go_one_per_request(running: list[RunningDelivery]) -> None:
    poster = FakePoster()
    run = RunningDelivery(poster, FAST, senders=1, bundle_after_s=3600)
    running.append(run)
    for i in range(5):
        run.delivery.put(batch(i))
    poll_until(lambda: len(run.outcomes()) == 5, 10, "5 settled")
    assert [len(c.events) for c in poster.calls] == [1] * 5


def test_waiting_batches_of_one_endpoint_share_a_request_up_to_100_events(
    running: list[RunningDelivery],
) -> None:
    gate = threading.Event()

    def script(number: int, endpoint: str, events: list[dict[str, object]]) -> Outcome:
        gate.wait(10)  # the first request holds the only sender while others queue
        return Outcome(200)

    poster = FakePoster(script)
    run = RunningDelivery(poster, FAST, senders=1)
    running.append(run)
    run.delivery.put(Batch("publish_events", [b'{"seq":-1}']))
    poll_until(lambda: poster.count() == 1, 10, "the first request")
    for i in range(150):
        run.delivery.put(batch(i))
    run.delivery.put(Batch("publish_llm_events", [b'{"seq":-2}']))
    gate.set()
    poll_until(lambda: len(run.outcomes()) == 152, 10, "152 settled")
    sizes = [(c.endpoint, len(c.events)) for c in poster.calls]
    assert sizes == [
        ("publish_events", 1),
        ("publish_events", 100),
        ("publish_events", 50),
        ("publish_llm_events", 1),
    ]


def test_retry_after_holds_every_sender_until_it_passes(running: list[RunningDelivery]) -> None:
    pause_s = 0.3
    policy = RetryPolicy(
        max_retries=5, backoff_base_s=0.001, backoff_cap_s=0.001, retry_after_cap_s=pause_s
    )
    poster = FakePoster(lambda n, e, ev: Outcome(429, retry_after="60") if n == 1 else Outcome(200))
    run = RunningDelivery(poster, policy, senders=4)
    running.append(run)
    run.delivery.put(batch(0))
    poll_until(lambda: poster.count() >= 1, 10, "the first post")
    for i in range(1, 4):
        run.delivery.put(batch(i))
    poll_until(lambda: len(run.outcomes()) == 4, 10, "4 settled")
    first: Call = poster.calls[0]
    later = poster.calls[1:]
    # Retry-After asked for 60 s, capped to 0.3 s: nobody posted before that.
    assert min(c.at for c in later) - first.at >= pause_s
    assert later[0].events == first.events  # the failed batch goes first


@pytest.mark.internal_errors_allowed
def test_a_poster_that_raises_is_a_failed_attempt_not_a_dead_sender(
    running: list[RunningDelivery],
) -> None:
    def script(number: int, endpoint: str, events: list[dict[str, object]]) -> Outcome:
        if number == 1:
            raise RuntimeError("boom")
        return Outcome(200)

    run = RunningDelivery(FakePoster(script), FAST, senders=1)
    running.append(run)
    run.delivery.put(batch(0))
    poll_until(lambda: run.outcomes(), 10, "the batch to settle")
    assert run.outcomes()[0].delivered and run.delivery.retried_requests == 1


def test_stop_closes_the_poster_and_ends_every_thread() -> None:
    poster = FakePoster()
    run = RunningDelivery(poster, FAST, senders=3)
    run.stop()
    assert poster.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("trubrics-mp-sender")]


def test_a_batch_is_given_up_once_retry_for_has_passed_on_the_delivery_clock(
    running: list[RunningDelivery],
) -> None:
    """The clock is the test's: real time, plus 10 s per attempt; retry_for is 25 s."""
    skipped = [0.0]

    def failing(number: int, endpoint: str, events: list[dict[str, Any]]) -> Outcome:
        skipped[0] += 10.0
        return Outcome(503)

    poster = FakePoster(failing)
    policy = RetryPolicy(retry_for_s=25.0, backoff_base_s=0.001, backoff_cap_s=0.001)
    run = RunningDelivery(poster, policy, senders=1, clock=lambda: time.monotonic() + skipped[0])
    running.append(run)
    run.delivery.put(batch(0))
    poll_until(lambda: run.outcomes(), 10, "the batch to settle")
    (settled,) = run.outcomes()
    assert settled.reason == "retries_exhausted"
    assert poster.count() == 3  # at 1000 (first), 1010 and 1020; at 1030 the 25 s were spent


def test_the_main_loop_is_woken_once_per_group_of_settled_batches_it_takes() -> None:
    wakes: list[int] = []
    delivery = Delivery(FakePoster(always(200)), FAST, 2, lambda: wakes.append(1), LOG)
    delivery.start()
    try:
        for i in range(10):
            delivery.put(batch(i))
        poll_until(lambda: delivery.requests == 10, 10, "10 posts")
        poll_until(lambda: len(wakes) >= 1, 10, "a wake-up")
        assert len(wakes) == 1  # the main loop has not taken the first yet: no more wake-ups
        assert len(delivery.take_settled()) == 10
        delivery.put(batch(10))
        poll_until(lambda: len(wakes) == 2, 10, "a wake-up for the batch after the take")
        assert len(delivery.take_settled()) == 1
    finally:
        delivery.stop(timeout_s=5.0)
