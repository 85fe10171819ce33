"""Pure parts of the drop-in: 1.8.5's clamps, log records on the wire, naive timestamps."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Iterator

import pytest

from trubrics_mp._compat import clamp_like_official
from trubrics_mp._logs import record_from_wire, record_to_wire, replay
from trubrics_mp._serialize import encode_event


def test_the_official_clamps_and_their_warnings() -> None:
    clamped = clamp_like_official(0.2, 500, None)
    assert (clamped.flush_interval, clamped.flush_batch_size) == (1.0, 100)
    assert clamped.flush_periodic_check == 0.1
    assert clamped.warnings == (
        "Flush interval 0.2 is too low. Setting it to minimum allowed value of 1.",
        "Flush batch size 500 is too high. Setting to maximum allowed value of 100.",
    )
    slow_check = clamp_like_official(5, 20, 30)
    assert slow_check.flush_periodic_check == 5 and len(slow_check.warnings) == 1


@pytest.mark.parametrize(("interval", "batch"), [(-1, 20), (10, 0), ("10", 20), (10, True)])
def test_values_1_8_5_cannot_use_are_left_for_config_to_refuse(
    interval: object, batch: object
) -> None:
    clamped = clamp_like_official(interval, batch, None)
    assert (clamped.flush_interval, clamped.flush_batch_size) == (interval, batch)


def test_a_record_crosses_the_wire_with_its_message_and_pid() -> None:
    record = logging.LogRecord("app", logging.ERROR, "/x.py", 7, "dropped %d events", (3,), None)
    back = record_from_wire(record_to_wire(record))
    assert (back.name, back.levelno, back.getMessage()) == (
        "app",
        logging.ERROR,
        "dropped 3 events",
    )
    assert back.process == record.process and back.processName == "trubrics-mp-flusher"
    assert back.lineno == 7 and back.created == record.created


class Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


def test_a_replayed_record_honours_the_level_and_a_bad_one_is_ignored() -> None:
    seen: list[logging.LogRecord] = []
    logger = logging.getLogger("dropin.units.replay")
    logger.setLevel(logging.WARNING)
    handler = Collect(seen)
    logger.addHandler(handler)
    try:
        for level in (logging.INFO, logging.ERROR):
            record = logging.LogRecord("dropin.units.replay", level, "", 0, "m", None, None)
            replay(logging.LoggerAdapter(logger, {}), record_to_wire(record))
        replay(logger, b"not json")
        replay(logger, json.dumps([1]).encode())
    finally:
        logger.removeHandler(handler)
    assert [r.levelno for r in seen] == [logging.ERROR]


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_naive_timestamp_is_local_time_sent_in_utc(tokyo: None) -> None:
    naive = datetime.datetime(2026, 12, 2, 9, 0, 0)  # 09:00 in Tokyo is 00:00 UTC
    event = json.loads(encode_event("u", "e", None, naive, 65_536))
    assert event["timestamp"] == "2026-12-02T00:00:00+00:00"
    nested = json.loads(encode_event("u", "e", {"at": naive}, None, 65_536))
    assert nested["properties"]["at"] == "2026-12-02T00:00:00+00:00"
