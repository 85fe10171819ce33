"""Rate-limited log lines: the bucket per key, and a flood of bad events through track()."""

from __future__ import annotations

import logging

import pytest

from trubrics_mp import Trubrics
from trubrics_mp._ratelimit import LogLimiter


def test_a_burst_then_one_line_per_interval_and_the_next_line_says_how_many_were_left_out() -> None:
    limiter = LogLimiter(burst=3, interval_s=10.0)
    assert [limiter.allow("k", 0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.allow("k", 5.0) is None  # half a token
    assert limiter.allow("k", 10.0) == 3  # one token back: it tells of the three left out
    assert limiter.allow("k", 10.0) is None


def test_keys_have_buckets_of_their_own() -> None:
    limiter = LogLimiter(burst=1, interval_s=10.0)
    assert limiter.allow("a", 0.0) == 0 and limiter.allow("a", 0.0) is None
    assert limiter.allow("b", 0.0) == 0


def test_a_bucket_refills_up_to_the_burst_only() -> None:
    limiter = LogLimiter(burst=2, interval_s=1.0)
    assert limiter.allow("k", 0.0) == 0
    allowed = [limiter.allow("k", 1000.0) for _ in range(4)]
    assert allowed == [0, 0, None, None]


def test_the_line_that_follows_a_gap_names_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = LogLimiter(burst=1, interval_s=10.0, clock=lambda: now[0])
    log = logging.getLogger("trubrics_mp.tests.ratelimit")
    with caplog.at_level(logging.ERROR, logger=log.name):
        for _ in range(4):
            limiter.log(log, logging.ERROR, "k", "dropped %d", 1)
        now[0] = 10.0
        limiter.log(log, logging.ERROR, "k", "dropped %d", 1)
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 1",
        "dropped 1 (and 3 more like it, not logged)",
    ]


def test_a_flood_of_bad_events_costs_a_few_lines_and_every_event_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Trubrics("unit-key", "http://127.0.0.1:9", disabled=True)  # refused before sending
    try:
        with caplog.at_level(logging.ERROR, logger=client.logger.name):
            for _ in range(1000):
                client.track(user_id="", event="e")  # refused in the caller
        lines = [r for r in caplog.records if "dropped an invalid event" in r.getMessage()]
        assert 1 <= len(lines) <= 10
        assert client.stats(flusher=False).dropped == {"invalid_field": 1000}
    finally:
        client.close(timeout=5)
