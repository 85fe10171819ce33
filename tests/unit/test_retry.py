"""Retry decisions: what is delivered, retried or dropped, backoff and Retry-After."""

from __future__ import annotations

from typing import Optional

import pytest

from trubrics_mp._retry import Outcome, RetryPolicy, parse_retry_after


def outcome(status: Optional[int], retry_after: Optional[str] = None) -> Outcome:
    return Outcome(status, retry_after=retry_after)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_delivered(status: Optional[int]) -> None:
    assert (
        RetryPolicy(max_retries=10)
        .decide(outcome(status), 1, now=0, now_epoch_s=0, jitter=0)
        .action
        == "delivered"
    )


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504])
def test_transient_failures_are_retried_with_backoff(status: Optional[int]) -> None:
    decision = RetryPolicy(max_retries=10).decide(
        outcome(status), 1, now=100.0, now_epoch_s=0, jitter=0.0
    )
    assert decision.action == "retry"
    assert decision.retry_at == 100.0 + RetryPolicy().backoff_s(1, 0.0)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "http_400"), (401, "unauthorized"), (403, "unauthorized"), (422, "http_422")],
)
def test_other_client_errors_drop_the_batch(status: Optional[int], reason: str) -> None:
    decision = RetryPolicy(max_retries=10).decide(
        outcome(status), 1, now=0, now_epoch_s=0, jitter=0
    )
    assert (decision.action, decision.reason) == ("drop", reason)


def test_the_retry_budget_is_bounded() -> None:
    assert (
        RetryPolicy(max_retries=3).decide(outcome(503), 3, now=0, now_epoch_s=0, jitter=0).action
        == "retry"
    )
    decision = RetryPolicy(max_retries=3).decide(outcome(503), 4, now=0, now_epoch_s=0, jitter=0)
    assert (decision.action, decision.reason) == ("drop", "retries_exhausted")


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    assert [RetryPolicy().backoff_s(n, 0.999999) for n in (1, 2, 3)] == pytest.approx(
        [0.5, 1.0, 2.0]
    )
    assert RetryPolicy().backoff_s(1, 0.0) == 0.25  # jitter takes off up to half
    assert RetryPolicy().backoff_s(30, 0.999999) == pytest.approx(30.0)


def test_retry_after_is_honoured_in_seconds_and_as_a_date() -> None:
    decision = RetryPolicy(max_retries=10).decide(
        outcome(429, "7"), 1, now=100.0, now_epoch_s=0, jitter=0
    )
    assert decision.retry_at == 107.0
    epoch = 1_800_000_000.0
    http_date = "Fri, 15 Jan 2027 08:00:20 GMT"
    assert parse_retry_after(http_date, epoch, 300.0) == 20.0
    assert parse_retry_after("garbage", epoch, 300.0) is None
    assert parse_retry_after("100000", epoch, 300.0) == 300.0  # capped


# -- the time budget (retry_for) ------------------------------------------------------------
def test_without_a_count_a_batch_is_retried_until_retry_for_has_passed() -> None:
    policy = RetryPolicy(retry_for_s=60.0)  # max_retries None: no count
    within = policy.decide(
        outcome(503), 500, now=159.0, now_epoch_s=0, jitter=0, first_tried_at=100
    )
    assert within.action == "retry"
    spent = policy.decide(outcome(503), 3, now=160.0, now_epoch_s=0, jitter=0, first_tried_at=100)
    assert (spent.action, spent.reason) == ("drop", "retries_exhausted")


def test_the_last_retry_is_made_when_the_budget_ends_not_after() -> None:
    policy = RetryPolicy(retry_for_s=60.0)
    decision = policy.decide(
        outcome(None), 9, now=150.0, now_epoch_s=0, jitter=0.99, first_tried_at=100
    )
    assert decision.action == "retry" and decision.retry_at == 160.0  # backoff says ~180


def test_a_retry_after_beyond_the_budget_drops_the_batch_now() -> None:
    policy = RetryPolicy(retry_for_s=60.0)
    decision = policy.decide(
        outcome(429, "120"), 1, now=100.0, now_epoch_s=0, jitter=0, first_tried_at=100
    )
    assert (decision.action, decision.reason) == ("drop", "retries_exhausted")
    within = policy.decide(
        outcome(429, "30"), 1, now=100.0, now_epoch_s=0, jitter=0, first_tried_at=100
    )
    assert within.action == "retry" and within.retry_at == 130.0


def test_a_count_still_bounds_retries_within_the_time() -> None:
    policy = RetryPolicy(max_retries=2, retry_for_s=3600.0)
    assert policy.decide(
        outcome(503), 3, now=1, now_epoch_s=0, jitter=0, first_tried_at=0
    ).reason == ("retries_exhausted")


def test_a_zero_budget_means_one_attempt() -> None:
    decision = RetryPolicy(retry_for_s=0.0).decide(
        outcome(503), 1, now=5.0, now_epoch_s=0, jitter=0, first_tried_at=5.0
    )
    assert decision.action == "drop"
