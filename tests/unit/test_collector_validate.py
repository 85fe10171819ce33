"""The collector's validation of batches: pure functions, exact error details."""

from __future__ import annotations

from typing import Any

import pytest
from support.payloads import NAIVE, llm_event, plain_event

from trubrics_mp.collector import BatchError, validate_batch


def test_valid_batches_pass_unchanged() -> None:
    batch = [plain_event(i) for i in range(100)]
    assert validate_batch(batch, "event") == batch
    assert validate_batch([plain_event(properties=None)], "event")
    assert validate_batch([llm_event(latency=3, assistant_id=None, thread_id=None)], "llm_event")
    assert validate_batch([llm_event(latency=None, properties=None)], "llm_event")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"user_id": "u"}, "body: expected a JSON list of events, got an object"),
        ("x", "body: expected a JSON list of events, got a string"),
        (None, "body: expected a JSON list of events, got null"),
        ([], "body: expected 1 to 100 events, got 0"),
        ([plain_event()] * 101, "body: expected 1 to 100 events, got 101"),
        ([plain_event(), 7], "events[1]: expected an object"),
    ],
)
def test_batch_shape_errors(body: Any, detail: str) -> None:
    with pytest.raises(BatchError) as caught:
        validate_batch(body, "event")
    assert caught.value.detail == detail


BAD_PLAIN = [
    ("user_id", 5, "expected a string"),
    ("user_id", None, "expected a string"),
    ("event", ["x"], "expected a string"),
    ("properties", [1], "expected an object or null"),
    ("properties", "x", "expected an object or null"),
    ("timestamp", NAIVE, "expected a timestamp with a UTC offset (e.g. +00:00)"),
    ("timestamp", "yesterday", "expected an ISO 8601 timestamp string"),
    ("timestamp", 1764410400, "expected an ISO 8601 timestamp string"),
]


@pytest.mark.parametrize(("field", "value", "problem"), BAD_PLAIN)
def test_plain_event_field_errors(field: str, value: Any, problem: str) -> None:
    batch = [plain_event(0), plain_event(1), plain_event(2), plain_event(3, **{field: value})]
    with pytest.raises(BatchError) as caught:
        validate_batch(batch, "event")
    assert caught.value.detail == f"events[3].{field}: {problem}"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("prompt", 1, "expected a string"),
        ("generation_event_name", None, "expected a string"),
        ("assistant_id", 4, "expected a string or null"),
        ("thread_id", {}, "expected a string or null"),
        ("latency", True, "expected a number or null"),
        ("latency", "1.2", "expected a number or null"),
        ("latency", float("nan"), "expected a finite number or null"),
        ("timestamp", NAIVE, "expected a timestamp with a UTC offset (e.g. +00:00)"),
    ],
)
def test_llm_event_field_errors(field: str, value: Any, problem: str) -> None:
    with pytest.raises(BatchError) as caught:
        validate_batch([llm_event(**{field: value})], "llm_event")
    assert caught.value.detail == f"events[0].{field}: {problem}"


def test_missing_and_unknown_keys() -> None:
    missing = plain_event()
    del missing["timestamp"]
    with pytest.raises(BatchError, match=r"^events\[0\]\.timestamp: field required$"):
        validate_batch([missing], "event")
    with pytest.raises(BatchError, match=r"^events\[0\]\.extra: unknown field$"):
        validate_batch([plain_event(extra=1)], "event")
    with pytest.raises(BatchError, match=r"^events\[0\]\.prompt: field required$"):
        validate_batch([plain_event()], "llm_event")
    with pytest.raises(ValueError, match="unknown event kind"):
        validate_batch([plain_event()], "other")
