"""The caller's values, however odd, end as a counted refusal, never as an internal error.

Exceptions raised by the caller's own objects, lone surrogates, keys that
collide once converted to JSON, and strings over the size limit: each is an
``InvalidEvent`` with its own reason, and the client counts and logs it once.
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import tracemalloc
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Callable

import pytest

from trubrics_mp import Trubrics
from trubrics_mp._serialize import InvalidEvent, encode_event, encode_llm_event

# Every test twice: the standard json encoder, and orjson (skipped when not installed).
pytestmark = pytest.mark.usefixtures("json_encoder")

LIMIT = 65536
UTC_MINUS_5 = datetime.timezone(datetime.timedelta(hours=-5))


def encode(properties: object = None, **fields: Any) -> bytes:
    args: dict[str, Any] = {"user_id": "u", "event": "e", "timestamp": None, **fields}
    return encode_event(args["user_id"], args["event"], properties, args["timestamp"], LIMIT)


def encode_llm(**fields: Any) -> bytes:
    args: dict[str, Any] = {
        "user_id": "u",
        "prompt": "p",
        "generation": "g",
        "prompt_event_name": "Prompt",
        "generation_event_name": "Generation",
        "assistant_id": None,
        "properties": None,
        "timestamp": None,
        "latency": None,
        "thread_id": None,
        **fields,
    }
    return encode_llm_event(max_bytes=LIMIT, **args)


def refusal(make: Callable[[], bytes]) -> InvalidEvent:
    """The InvalidEvent ``make()`` raises (any other exception fails the test)."""
    with pytest.raises(InvalidEvent) as info:
        make()
    return info.value


# -- the caller's objects raising while they are read or converted ---------------------
class Boom(Exception):
    pass


class RaisingSet(set[int]):
    def __iter__(self) -> Iterator[int]:
        raise Boom("set iteration failed")


class RaisingItems(dict[str, int]):
    def items(self) -> Any:
        raise Boom("items failed")


class RaisingList(list[int]):
    def __iter__(self) -> Iterator[int]:
        raise Boom("list iteration failed")


class RaisingOffset(datetime.tzinfo):
    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        raise Boom("no offset today")

    def dst(self, dt: datetime.datetime | None) -> None:
        return None

    def tzname(self, dt: datetime.datetime | None) -> str:
        return "nowhere"


class RaisingUUID(uuid.UUID):
    def __str__(self) -> str:
        raise Boom("no text")


class RaisingDecimal(Decimal):
    def is_finite(self) -> bool:
        raise Boom("undecided")


class Unsortable:
    def __hash__(self) -> int:
        return 1

    def __lt__(self, other: object) -> bool:
        raise Boom("cannot compare")


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message either")


class DeeplyBroken(list[int]):
    def __iter__(self) -> Iterator[int]:
        raise UnprintableError()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (RaisingSet({1}), "RaisingSet raised Boom: set iteration failed"),
        (RaisingItems(a=1), "RaisingItems raised Boom: items failed"),
        ([RaisingItems(a=1)], "RaisingItems raised Boom: items failed"),
        (RaisingList([1]), "RaisingList raised Boom: list iteration failed"),
        (
            datetime.datetime(2026, 1, 1, tzinfo=RaisingOffset()),
            "datetime raised Boom: no offset today",
        ),
        (
            datetime.datetime.max.replace(tzinfo=UTC_MINUS_5),
            "datetime raised OverflowError: date value out of range",
        ),
        (RaisingUUID(int=1), "RaisingUUID raised Boom: no text"),
        (RaisingDecimal("1.5"), "RaisingDecimal raised Boom: undecided"),
        ({Unsortable(), Unsortable()}, "set raised Boom: cannot compare"),
        (DeeplyBroken([1]), "DeeplyBroken raised UnprintableError: (its message cannot be shown)"),
    ],
    ids=[
        "set-iter",
        "dict-items",
        "dict-items-in-a-list",
        "list-iter",
        "utcoffset",
        "utc-overflow",
        "uuid-str",
        "decimal-is-finite",
        "set-sort",
        "unprintable-exception",
    ],
)
def test_an_exception_from_a_property_value_is_an_unserialisable_refusal(
    value: object, named: str
) -> None:
    error = refusal(lambda: encode({"x": value}))
    assert error.reason == "unserialisable"
    assert str(error) == f"properties cannot be sent: a value of type {named}"


def test_properties_of_a_dict_subclass_that_raises_are_refused() -> None:
    error = refusal(lambda: encode(RaisingItems(a=1)))
    assert (error.reason, str(error)) == (
        "unserialisable",
        "properties cannot be sent: a value of type RaisingItems raised Boom: items failed",
    )


@pytest.mark.parametrize(
    ("stamp", "named"),
    [
        (datetime.datetime(2026, 1, 1, tzinfo=RaisingOffset()), "Boom: no offset today"),
        (datetime.datetime.max.replace(tzinfo=UTC_MINUS_5), "OverflowError: date value"),
    ],
    ids=["utcoffset-raises", "overflows-at-utc"],
)
def test_a_timestamp_that_cannot_be_moved_to_utc_is_refused(
    stamp: datetime.datetime, named: str
) -> None:
    error = refusal(lambda: encode(timestamp=stamp))
    assert error.reason == "unserialisable"
    assert str(error).startswith(
        f"timestamp cannot be sent: a value of type datetime raised {named}"
    )


class Unprintable:
    def __str__(self) -> str:
        raise Boom("no text")


class Incomparable:
    def __eq__(self, other: object) -> bool:
        raise Boom("no comparison")

    __hash__ = object.__hash__


def test_a_thread_id_whose_str_raises_is_refused() -> None:
    error = refusal(lambda: encode_llm(thread_id=Unprintable()))
    assert (error.reason, str(error)) == (
        "unserialisable",
        "thread_id cannot be sent: a value of type Unprintable raised Boom: no text",
    )


def test_a_field_of_the_wrong_type_is_refused_without_calling_its_methods() -> None:
    error = refusal(lambda: encode(user_id=Incomparable()))
    assert (error.reason, str(error)) == (
        "invalid_field",
        "user_id must be a non-empty string, not Incomparable",
    )


# -- lone surrogates -----------------------------------------------------------------------
LONE_HIGH, LONE_LOW = "\ud83d", "\ude00"


@pytest.mark.parametrize(
    ("make", "unit"),
    [
        (lambda: encode({"text": "cut " + LONE_HIGH}), "U+D83D"),
        (lambda: encode({"text": LONE_LOW + " cut"}), "U+DE00"),
        (lambda: encode({"text": LONE_LOW + LONE_HIGH}), "U+DE00"),  # the wrong order
        (lambda: encode({"a": ["ok", {"b": "\U0001f600" + LONE_HIGH}]}), "U+D83D"),
        (lambda: encode({LONE_HIGH: 1}), "U+D83D"),
        (lambda: encode(user_id="u" + LONE_LOW), "U+DE00"),
        (lambda: encode(event=LONE_HIGH), "U+D83D"),
        (lambda: encode_llm(generation="emoji cut in half: " + LONE_HIGH), "U+D83D"),
        (lambda: encode({"path": b"caf\xe9".decode("utf-8", "surrogateescape")}), "U+DCE9"),
    ],
    ids=["high", "low", "swapped", "nested", "key", "user_id", "event", "llm", "surrogateescape"],
)
def test_a_lone_surrogate_is_refused_as_invalid_text(make: Callable[[], bytes], unit: str) -> None:
    error = refusal(make)
    assert error.reason == "invalid_text"
    assert f"lone surrogate ({unit})" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        "\U0001f600 and \U0001f44d\U0001f3fd",  # surrogate pairs once escaped
        "\\ud83d written out, with its backslash",
        "\\\\ud83d",
        "\ud7ff\ue000 (just outside the surrogates)",
        'caf\u00e9 "quoted"\n\t\\',
    ],
    ids=["pairs", "escape-lookalike", "two-backslashes", "neighbours", "other-escapes"],
)
def test_text_without_a_lone_surrogate_is_sent_unchanged(text: str) -> None:
    data = encode({text: text}, user_id=text)
    event = json.loads(data)
    assert event["user_id"] == text and event["properties"] == {text: text}
    data.decode("ascii")  # every non-ASCII character is escaped


# -- keys that collide once converted -------------------------------------------------------
class Key(str):
    """A str subclass that hashes apart from its text, as some str mixins do."""

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return type(other) is Key and str.__eq__(self, other)


@pytest.mark.parametrize(
    ("properties", "shown"),
    [
        ({1: "a", "1": "b"}, "the keys 1 (int) and '1' would both be the JSON key '1'"),
        ({"1": "a", 1: "b"}, "the keys '1' and 1 (int) would both be"),
        ({True: "a", "true": "b"}, "the keys True (bool) and 'true'"),
        ({None: "a", "null": "b"}, "the keys None (NoneType) and 'null'"),
        ({1.5: "a", "1.5": "b"}, "the keys 1.5 (float) and '1.5'"),
        ({"m": {2: "a", "2": "b"}}, "the keys 2 (int) and '2'"),
        ({"m": [{"ok": 1}, {0: "a", "0": "b"}]}, "the keys 0 (int) and '0'"),
        ({Key("k"): 1, "k": 2}, "the keys 'k' (Key) and 'k'"),
    ],
    ids=["int", "int-second", "bool", "none", "float", "nested", "in-a-list", "str-subclass"],
)
def test_keys_that_would_be_the_same_json_key_are_refused(
    properties: dict[Any, Any], shown: str
) -> None:
    error = refusal(lambda: encode(properties))
    assert error.reason == "key_collision"
    assert shown in str(error)


def test_keys_that_stay_apart_once_converted_are_sent_as_json_keys() -> None:
    properties = {1: "a", 2.5: "b", False: "c", None: "d", "x": {10: "e", "10.0": "f"}}
    event = json.loads(encode(properties))
    assert event["properties"] == {
        "1": "a",
        "2.5": "b",
        "false": "c",
        "null": "d",
        "x": {"10": "e", "10.0": "f"},
    }


# -- huge strings ---------------------------------------------------------------------------
HUGE = "\u00e9" * 2_000_000  # 12 MB once escaped as \u00e9


def peak_bytes_while(make: Callable[[], bytes]) -> tuple[InvalidEvent, int]:
    """The refusal of ``make()`` and the most memory allocated meanwhile."""
    tracemalloc.start()
    try:
        error = refusal(make)
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(user_id=HUGE),
        lambda: encode(event=HUGE),
        lambda: encode_llm(prompt=HUGE),
        lambda: encode_llm(generation=HUGE),
        lambda: encode_llm(assistant_id=HUGE),
        lambda: encode_llm(prompt_event_name=HUGE),
        lambda: encode({"doc": [HUGE]}),
        lambda: encode({"doc": {"text": HUGE}}),
        lambda: encode({"doc": [{HUGE: 1}]}),
        lambda: encode({"doc": ("x", (HUGE,))}),
        lambda: encode({"tags": {HUGE}}),
        lambda: encode({"ok": uuid.UUID(int=1), "doc": HUGE}),
        lambda: encode({"doc": ["x" * 40_000, "y" * 40_000]}),  # each fits, not both
    ],
    ids=[
        "user_id",
        "event",
        "prompt",
        "generation",
        "assistant_id",
        "prompt_event_name",
        "in-a-list",
        "in-a-dict",
        "as-a-key",
        "in-a-tuple",
        "in-a-set",
        "beside-an-object",
        "two-halves",
    ],
)
def test_a_string_over_the_limit_is_refused_before_anything_is_encoded(
    make: Callable[[], bytes],
) -> None:
    error, peak = peak_bytes_while(make)
    assert error.reason == "too_large"
    assert "refused before encoding" in str(error)
    assert peak < 1_000_000, f"{peak} bytes allocated: the string was encoded"


def test_a_value_that_repeats_one_list_is_refused_before_it_is_encoded() -> None:
    shared: list[Any] = ["x"]
    for _ in range(20):  # a million "x" once encoded
        shared = [shared, shared]
    error, peak = peak_bytes_while(lambda: encode({"tree": shared}))
    assert error.reason == "too_large"
    assert peak < 1_000_000


def test_a_string_value_of_a_flat_dict_is_refused_once_encoded() -> None:
    """The documented caveat: the one place a long string is measured after encoding."""
    error = refusal(lambda: encode({"doc": "x" * (LIMIT + 1)}))
    assert error.reason == "too_large"
    assert str(error).endswith("bytes once encoded, over the limit of 65536")


@pytest.mark.parametrize(
    "properties",
    [
        {"a": ["x" * 100, "y"], "b": {"c": "z" * 50, "d": [None, True, 1.5]}},
        {"list": [[], {}, "", [[[]]]], "e": {}},
        {"tuple": ("a", ("b", 1)), 7: "int key", None: "none key"},
        {"deep": [{"k": [{"k": "v" * 30}] * 3}] * 4},
        {"s": "\u00e9" * 40, "t": ["\U0001f600" * 5]},  # escaped: longer than they look
    ],
    ids=["nested", "empty", "tuple-and-keys", "shared", "non-ascii"],
)
def test_the_size_estimate_never_refuses_properties_that_fit(properties: dict[Any, Any]) -> None:
    """The walk's estimate is a lower bound: properties exactly at the limit pass it."""
    from trubrics_mp._values import checked_properties

    exact = len(json.dumps(properties, separators=(",", ":")))
    assert checked_properties(properties, exact) is properties
    with pytest.raises(InvalidEvent) as info:  # and the encoded event itself is refused
        encode_event("u", "e", properties, None, exact)
    assert info.value.reason == "too_large" and "once encoded" in str(info.value)


# -- the common case is untouched -----------------------------------------------------------
class Colour(str, enum.Enum):
    RED = "red"


def test_ordinary_values_are_encoded_as_before() -> None:
    stamp = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
    properties = {
        "plan": "pro",
        "n": 3,
        "ratio": 0.5,
        "flag": False,
        "none": None,
        "tags": ["a", "b"],
        "meta": {"nested": {"deep": [1, 2]}},
        "when": stamp,
        "id": uuid.UUID(int=1),
        "cost": Decimal("0.25"),
        "colour": Colour.RED,
    }
    event = json.loads(encode(properties, timestamp=stamp))
    assert event == {
        "user_id": "u",
        "event": "e",
        "properties": {
            "plan": "pro",
            "n": 3,
            "ratio": 0.5,
            "flag": False,
            "none": None,
            "tags": ["a", "b"],
            "meta": {"nested": {"deep": [1, 2]}},
            "when": "2026-01-01T12:00:00+00:00",
            "id": "00000000-0000-0000-0000-000000000001",
            "cost": 0.25,
            "colour": "red",
        },
        "timestamp": "2026-01-01T12:00:00+00:00",
    }


# -- through the public client ---------------------------------------------------------------
def test_the_client_counts_and_logs_each_bad_value_once(caplog: pytest.LogCaptureFixture) -> None:
    api_key = "sk-values-test-91c7"
    client = Trubrics(api_key, disabled=True)  # encodes every event, starts no process
    with caplog.at_level(logging.DEBUG, logger=client.logger.name):
        client.track(user_id="u", event="ok", properties={"seq": 0})
        client.track(user_id="u", event="e", properties={"s": RaisingSet({1})})
        client.track(
            user_id="u", event="e", timestamp=datetime.datetime.max.replace(tzinfo=UTC_MINUS_5)
        )
        client.track(user_id="u", event="e", properties={1: "a", "1": "b"})  # type: ignore[dict-item]
        client.track(user_id="u", event="e", properties={"text": LONE_HIGH})
        client.track(user_id=HUGE, event="e")
        client.track_llm(user_id="u", prompt="p", generation="g", thread_id=Unprintable())  # type: ignore[arg-type]
        client.track(user_id="u", event="ok", properties={"seq": 1})
    assert client.stats().dropped == {
        "unserialisable": 3,
        "key_collision": 1,
        "invalid_text": 1,
        "too_large": 1,
        "disabled": 2,  # the two good events took the usual way
    }
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    messages = [r.getMessage() for r in records]
    assert len(messages) == 6, messages
    assert all("dropped an invalid event" in m for m in messages), messages
    assert not any("internal error" in m or r.exc_info for m, r in zip(messages, records))
    assert not any(api_key in m for m in messages)
    assert all(len(m) < 300 for m in messages), "a log line quotes a whole value"
    client.close()
