"""A 413 splits the batch; only an event too large alone is dropped, and counted exactly."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from support.fakes import FakePoster, RunningDelivery, Script
from support.serving import ServingFlusher

from trubrics_mp._batching import Batch
from trubrics_mp._delivery import BUNDLE_AFTER_S, Settled
from trubrics_mp._retry import Outcome, RetryPolicy
from trubrics_mp._servers import poll_until
from trubrics_mp._split import Loss, Splits

FAST = RetryPolicy(max_retries=3, backoff_base_s=0.001, backoff_cap_s=0.002)
LOG = logging.getLogger("trubrics_mp.tests")


def events(*seqs: int, big: tuple[int, ...] = ()) -> list[bytes]:
    return [b'{"seq":%d,"big":%s}' % (s, b"true" if s in big else b"false") for s in seqs]


def too_large_over(limit: int) -> Script:
    """413 for a request of more than ``limit`` events or with a big event, else 200."""

    def script(number: int, endpoint: str, posted: list[dict[str, Any]]) -> Outcome:
        if len(posted) > limit or any(e["big"] for e in posted):
            return Outcome(413, detail="body too large")
        return Outcome(200)

    return script


# -- the pure bookkeeping --------------------------------------------------------------------
def test_halves_keep_the_order_and_the_parent_settles_last() -> None:
    splits = Splits()
    parent = Batch("publish_events", events(0, 1, 2, 3, 4))
    first, second = splits.split(parent)
    assert (first.events, second.events) == (events(0, 1), events(2, 3, 4))
    assert first.id != second.id != parent.id
    assert splits.settle(second, ()) is None
    assert splits.settle(first, ()) == (parent, ())
    assert len(splits) == 0


def test_nested_splits_settle_the_handed_over_batch_once_with_every_loss() -> None:
    splits = Splits()
    root = Batch("publish_events", events(0, 1, 2, 3))
    left, right = splits.split(root)
    right_left, right_right = splits.split(right)
    loss = Loss(1, "too_large", Outcome(413))
    assert splits.settle(right_right, (loss,)) is None
    assert splits.settle(left, ()) is None
    assert splits.settle(right_left, ()) == (root, (loss,))
    assert len(splits) == 0


def test_one_event_cannot_be_split() -> None:
    with pytest.raises(ValueError):
        Splits().split(Batch("publish_events", events(0)))


def test_413_splits_several_events_and_drops_one_alone() -> None:
    policy = RetryPolicy()
    split = policy.decide(Outcome(413), 1, now=0, now_epoch_s=0, jitter=0, events=2)
    alone = policy.decide(Outcome(413), 1, now=0, now_epoch_s=0, jitter=0, events=1)
    assert split.action == "split"
    assert (alone.action, alone.reason) == ("drop", "too_large")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_dropped_at_once(status: int) -> None:
    decision = RetryPolicy().decide(Outcome(status), 1, now=0, now_epoch_s=0, jitter=0)
    assert (decision.action, decision.reason) == ("drop", "redirect")


# -- delivery ----------------------------------------------------------------------------------
@pytest.fixture
def split_running() -> Iterator[list[RunningDelivery]]:
    made: list[RunningDelivery] = []
    yield made
    for each in made:
        each.delivery.stop(timeout_s=5.0)


def accepted(poster: FakePoster, limit: int) -> list[int]:
    """Events of the calls that ``too_large_over(limit)`` answered with a 200."""
    calls = [c for c in poster.calls if len(c.events) <= limit]
    return sorted(e["seq"] for c in calls if not any(e["big"] for e in c.events) for e in c.events)


def test_a_refused_batch_is_delivered_in_parts_and_settles_once(
    split_running: list[RunningDelivery],
) -> None:
    poster = FakePoster(too_large_over(2))
    run = RunningDelivery(poster, FAST, senders=2, bundle_after_s=BUNDLE_AFTER_S)
    split_running.append(run)
    batch = Batch("publish_events", events(*range(7)))
    run.delivery.put(batch)
    poll_until(lambda: run.outcomes(), 10, "the batch to settle")
    assert run.outcomes() == [Settled(batch)]
    assert accepted(poster, 2) == list(range(7))  # each event once
    assert run.delivery.retried_requests == 0  # a split is not a retry
    assert run.delivery.split_batches == 3  # 7 -> 3 + 4 -> (1 + 2) + (2 + 2)


def test_only_the_event_too_large_alone_is_lost(split_running: list[RunningDelivery]) -> None:
    poster = FakePoster(too_large_over(2))
    run = RunningDelivery(poster, FAST, senders=2, bundle_after_s=BUNDLE_AFTER_S)
    split_running.append(run)
    batch = Batch("publish_events", events(*range(6), big=(4,)))
    run.delivery.put(batch)
    poll_until(lambda: run.outcomes(), 10, "the batch to settle")
    (settled,) = run.outcomes()
    assert settled.batch is batch and settled.lost == 1
    assert [(loss.events, loss.reason, loss.last.status) for loss in settled.losses] == [
        (1, "too_large", 413)
    ]
    assert accepted(poster, 2) == [0, 1, 2, 3, 5]


def test_a_part_can_be_lost_for_another_reason_and_is_counted_as_such(
    split_running: list[RunningDelivery],
) -> None:
    def script(number: int, endpoint: str, posted: list[dict[str, Any]]) -> Outcome:
        if len(posted) > 2:
            return Outcome(413)
        return Outcome(503) if posted[0]["seq"] == 0 else Outcome(200)

    run = RunningDelivery(FakePoster(script), FAST, senders=1, bundle_after_s=BUNDLE_AFTER_S)
    split_running.append(run)
    run.delivery.put(Batch("publish_events", events(0, 1, 2, 3)))
    poll_until(lambda: run.outcomes(), 10, "the batch to settle")
    (settled,) = run.outcomes()
    assert [(loss.events, loss.reason) for loss in settled.losses] == [(2, "retries_exhausted")]
    assert run.delivery.retried_requests == FAST.max_retries


# -- the flusher's counts and flush() ------------------------------------------------------------
@pytest.fixture
def split_serving() -> Iterator[list[ServingFlusher]]:
    made: list[ServingFlusher] = []
    yield made
    for each in made:
        each.stop()


def test_flush_is_true_when_every_part_arrived(split_serving: list[ServingFlusher]) -> None:
    run = ServingFlusher(too_large_over(3), flush_at=20)  # leaves on flush()
    split_serving.append(run)
    for seq in range(10):
        run.track({"seq": seq, "big": False})
    assert run.flush() is True
    stats = run.stats()
    assert (stats["delivered"], stats["dropped"], stats["held"]) == (10, {}, 0)


def test_an_event_too_large_alone_is_counted_and_flush_says_false(
    split_serving: list[ServingFlusher],
) -> None:
    run = ServingFlusher(too_large_over(3), flush_at=20)  # leaves on flush()
    split_serving.append(run)
    for seq in range(10):
        run.track({"seq": seq, "big": seq == 7})
    assert run.flush() is False
    stats = run.stats()
    assert (stats["delivered"], stats["dropped"]) == (9, {"too_large": 1})
    assert (stats["held"], stats["failed_batches"]) == (0, 1)
    assert accepted(run.poster, 3) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
