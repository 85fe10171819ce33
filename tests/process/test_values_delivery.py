"""Odd values against a real flusher and collector: refused, counted, and harmless to others."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess

from trubrics_mp import Trubrics

API_KEY = "sk-values-delivery-5e0a"


class RaisingSet(set[int]):
    def __iter__(self) -> Iterator[int]:
        raise RuntimeError("set iteration failed")


def test_odd_values_are_refused_and_cost_no_other_event_its_delivery(
    collector: CollectorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    overflowing = datetime.datetime.max.replace(
        tzinfo=datetime.timezone(-datetime.timedelta(hours=5))
    )
    bad: list[dict[str, Any]] = [
        {"properties": {"src": "ok", "seq": 90, "s": RaisingSet({1})}},
        {"properties": {"src": "ok", "seq": 91}, "timestamp": overflowing},
        {"properties": {"src": "ok", "seq": 92, 1: "a", "1": "b"}},
        {"properties": {"src": "ok", "seq": 93, "text": "cut \ud83d"}},
        {"properties": {"src": "ok", "seq": 94, "doc": ["x" * 70_000]}},
    ]
    with Trubrics(API_KEY, collector.url, flush_at=3, flush_interval=0.2) as client:
        client.track(user_id="u", event="e", properties={"src": "ok", "seq": 0})
        for seq, fields in enumerate(bad, start=1):
            client.track(user_id="u", event="e", **fields)
            client.track(user_id="u", event="e", properties={"src": "ok", "seq": seq})
        assert client.flush(timeout=60) is True
        # Every good event once; a refused one (seq 90 and up) would be "nobody's".
        wait_exactly_once(collector, {"ok": len(bad) + 1}, timeout=60)
        stats = client.stats()
    assert stats.dropped == {
        "unserialisable": 2,
        "key_collision": 1,
        "invalid_text": 1,
        "too_large": 1,
    }
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == len(bad)
    assert all("track() dropped an invalid event" in r.getMessage() for r in errors)
    assert not any(r.exc_info or "internal error" in r.getMessage() for r in errors)
