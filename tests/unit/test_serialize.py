"""Serialisation: the official SDK's payloads, JSON conversions, refused events."""

from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from trubrics_mp._serialize import InvalidEvent, encode_event, encode_llm_event, iso_utc

# Every test twice: the standard json encoder, and orjson (skipped when not installed).
pytestmark = pytest.mark.usefixtures("json_encoder")

UTC = datetime.timezone.utc


def decode(data: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(data)
    return decoded


def test_plain_event_has_the_official_keys_in_order() -> None:
    stamp = datetime.datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    event = decode(encode_event("u-1", "Sign up", {"plan": "pro"}, stamp, 65536))
    assert list(event) == ["user_id", "event", "properties", "timestamp"]
    assert event["timestamp"] == "2026-11-29T10:00:00+00:00"


def test_llm_event_has_the_official_keys_in_order() -> None:
    event = decode(
        encode_llm_event(
            user_id="u",
            prompt="p",
            generation="g",
            prompt_event_name="Prompt",
            generation_event_name="Generation",
            assistant_id=None,
            properties=None,
            timestamp=None,
            latency=1.2,
            thread_id=7,
            max_bytes=65536,
        )
    )
    assert list(event) == [
        "user_id",
        "prompt",
        "generation",
        "prompt_event_name",
        "generation_event_name",
        "assistant_id",
        "properties",
        "timestamp",
        "latency",
        "thread_id",
    ]
    assert event["thread_id"] == "7"
    assert datetime.datetime.fromisoformat(event["timestamp"]).utcoffset() is not None


def test_aware_datetimes_are_converted_to_utc() -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    assert iso_utc(datetime.datetime(2026, 1, 1, 13, 0, tzinfo=paris)) == (
        "2026-01-01T12:00:00+00:00"
    )


def test_values_with_an_obvious_json_form_are_converted_nested() -> None:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    properties = {
        "when": datetime.datetime(2026, 1, 1, 12, 0),
        "day": datetime.date(2026, 1, 2),
        "id": ident,
        "cost": Decimal("0.25"),
        "tags": {"b", "a"},
        "pair": (1, 2),
        "nested": [{"at": datetime.date(2026, 1, 3), "ids": frozenset({ident})}],
    }
    event = decode(encode_event("u", "e", properties, None, 65536))
    assert event["properties"] == {
        "when": "2026-01-01T12:00:00+00:00",
        "day": "2026-01-02",
        "id": str(ident),
        "cost": 0.25,
        "tags": ["a", "b"],
        "pair": [1, 2],
        "nested": [{"at": "2026-01-03", "ids": [str(ident)]}],
    }


@pytest.mark.parametrize(
    ("kwargs", "reason", "message"),
    [
        ({"user_id": 42}, "invalid_field", "user_id must be a non-empty string, not int"),
        ({"user_id": ""}, "invalid_field", "user_id must be a non-empty string, not an empty"),
        ({"event": None}, "invalid_field", "event must be a non-empty string, not NoneType"),
        ({"properties": ["a"]}, "invalid_field", "properties must be a dict or None"),
        ({"timestamp": "2026-01-01"}, "invalid_field", "timestamp must be a datetime"),
        ({"properties": {"x": object()}}, "unserialisable", "type object cannot be sent"),
        ({"properties": {"x": float("nan")}}, "unserialisable", "Out of range float"),
        ({"properties": {"x": Decimal("Infinity")}}, "unserialisable", "not a finite number"),
        ({"properties": {"x": b"bytes"}}, "unserialisable", "type bytes cannot be sent"),
        ({"properties": {("a", 1): 1}}, "unserialisable", "keys must be"),
        ({"properties": {"x": "y" * 70_000}}, "too_large", "over the limit of 65536"),
    ],
)
def test_bad_events_are_refused_with_a_reason_and_a_message(
    kwargs: dict[str, Any], reason: str, message: str
) -> None:
    args = {"user_id": "u", "event": "e", "properties": None, "timestamp": None, **kwargs}
    with pytest.raises(InvalidEvent) as info:
        encode_event(args["user_id"], args["event"], args["properties"], args["timestamp"], 65536)
    assert info.value.reason == reason
    assert message in str(info.value)


def test_recursive_properties_are_refused_not_crashing() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(InvalidEvent) as info:
        encode_event("u", "e", loop, None, 65536)
    assert info.value.reason == "unserialisable"
