"""orjson (the fast extra) sends what the standard encoder sends, or leaves the event to it.

Each case runs the event through a spy of orjson's ``dumps`` and through the
standard encoder alone: the bytes (or the refusal: reason and message) must be
the same, and in a fallback case orjson's own output (the very object) is not
what was sent.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import gc
import json
import sys
from decimal import Decimal
from typing import Any, Callable, Optional

import pytest

from trubrics_mp import Trubrics
from trubrics_mp._serialize import (
    JSON_ENV,
    STDLIB,
    InvalidEvent,
    JsonEncoder,
    choose_encoder,
    encode_event,
    encode_llm_event,
)

from .conftest import ORJSON_ABSENT

LIMIT = 65536
STAMP = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)


class Spy:
    """orjson's ``dumps`` as the client calls it, keeping what it returned or raised."""

    def __init__(self, encoder: JsonEncoder) -> None:
        assert encoder.dumps is not None
        self.encoder = encoder
        self.dumps = encoder.dumps
        self.outputs: list[Optional[bytes]] = []  # None: it raised

    def __call__(self, value: Any, **options: Any) -> bytes:
        try:
            data = self.dumps(value, **options)
        except Exception:
            self.outputs.append(None)
            raise
        self.outputs.append(data)
        return data


@pytest.fixture
def spy() -> Spy:
    pytest.importorskip("orjson", reason=ORJSON_ABSENT)
    encoder = choose_encoder({})
    assert encoder.name == "orjson"
    return Spy(encoder)


def spied(spy: Spy) -> JsonEncoder:
    return dataclasses.replace(spy.encoder, dumps=spy)


Outcome = tuple[str, Any]  # ("sent", bytes) or ("refused", (reason, message))


def outcome(make: Callable[[JsonEncoder], bytes], encoder: JsonEncoder) -> Outcome:
    try:
        return ("sent", make(encoder))
    except InvalidEvent as exc:
        return ("refused", (exc.reason, str(exc)))


def event(properties: object = None, **fields: Any) -> Callable[[JsonEncoder], bytes]:
    args: dict[str, Any] = {"user_id": "u", "event": "e", "timestamp": STAMP, **fields}
    return lambda encoder: encode_event(
        args["user_id"], args["event"], properties, args["timestamp"], LIMIT, encoder
    )


def llm_event(**fields: Any) -> Callable[[JsonEncoder], bytes]:
    args: dict[str, Any] = {
        "user_id": "u",
        "prompt": "p",
        "generation": "g",
        "prompt_event_name": "Prompt",
        "generation_event_name": "Generation",
        "assistant_id": None,
        "properties": None,
        "timestamp": STAMP,
        "latency": 0.5,
        "thread_id": None,
        **fields,
    }
    return lambda encoder: encode_llm_event(max_bytes=LIMIT, encoder=encoder, **args)


def test_a_flat_event_is_encoded_by_orjson_as_json_would_send_it(spy: Spy) -> None:
    for make in (
        event(),
        event({"plan": "pro", "seats": 3, "ratio": 0.25, "ok": True, "big": 2**63 - 1}),
        event({"at": datetime.datetime(2026, 1, 1, 7, tzinfo=datetime.timezone.utc)}),
        event({"at": datetime.datetime(2026, 1, 1, 7)}),  # naive: local time, sent in UTC
        event({"none": None, "text": "null", "zero": 0.0, "minus": -1e300}),
        event({"day": datetime.date(2026, 1, 1)}),
        llm_event(),
        llm_event(assistant_id="a", thread_id="t", properties={"k": "v"}),
    ):
        data = make(spied(spy))
        assert data is spy.outputs[-1], "orjson was not used"
        assert json.loads(data) == json.loads(make(STDLIB))


def test_a_decimal_is_sent_as_json_sends_it(spy: Spy) -> None:
    """By orjson where a dict holding a Decimal is flat (untracked): not on Python 3.13,
    whose Decimal is a heap type the garbage collector tracks."""
    properties = {"price": Decimal("9.99")}
    data = event(properties)(spied(spy))
    assert data == event(properties)(STDLIB)
    used = any(data is output for output in spy.outputs)
    assert used is not gc.is_tracked(properties)


class Text(str):
    pass


class Level(enum.IntEnum):
    HIGH = 3


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int


class FailingZone(datetime.tzinfo):
    def utcoffset(self, dt: Optional[datetime.datetime]) -> datetime.timedelta:
        raise RuntimeError("no offset")

    def dst(self, dt: Optional[datetime.datetime]) -> datetime.timedelta:
        return datetime.timedelta(0)

    def tzname(self, dt: Optional[datetime.datetime]) -> str:
        return "failing"


NON_ASCII = "caf\u00e9 \U0001f600"
FALLBACKS: list[tuple[str, Callable[[JsonEncoder], bytes]]] = [
    ("NaN (orjson writes null)", event({"x": float("nan")})),
    ("infinity", event({"x": float("inf")})),
    ("minus infinity", event({"x": float("-inf")})),
    ("a Decimal over float's range", event({"x": Decimal("1e400")})),
    ("a Decimal NaN", event({"x": Decimal("NaN")})),
    ("an LLM latency of NaN", llm_event(latency=float("nan"))),
    ("an LLM latency of infinity", llm_event(latency=float("inf"))),
    ("an LLM latency of an IntEnum", llm_event(latency=Level.HIGH)),
    ("a float subclass", event({"x": type("F", (float,), {"__slots__": ()})(1.5)})),
    ("an integer over 64 bits", event({"x": 2**64})),
    ("an integer under -2**63", event({"x": -(2**63) - 1})),
    ("int, float, bool and None keys", event({2: "a", 2.5: "b", False: "c", None: "d"})),
    ("keys that collide", event({1: "a", "1": "b"})),
    ("a tuple key", event({(1, 2): "a"})),
    ("a lone surrogate", event({"x": "\ud83d"})),
    ("a lone surrogate in a field", llm_event(generation="cut \ud83d")),
    ("non-ASCII text", event({NON_ASCII: NON_ASCII}, event=NON_ASCII)),
    ("a str subclass value", event({"x": Text("t")})),
    ("a str subclass field", event(user_id=Text("u"))),
    ("a nested container", event({"tags": ["a", "b"], "meta": {"k": (1, 2)}})),
    ("a set", event({"s": {3, 1, 2}})),
    ("an Enum (orjson writes its value)", event({"c": Color.RED})),
    ("a dataclass (orjson writes its fields)", event({"p": Point(1)})),
    ("a time of day (orjson writes it)", event({"t": datetime.time(7, 30)})),
    (
        "a datetime whose utcoffset raises",
        event({"at": datetime.datetime(2026, 1, 1, tzinfo=FailingZone())}),
    ),
    ("an object", event({"o": object()})),
]


@pytest.mark.parametrize("make", [make for _, make in FALLBACKS], ids=[i for i, _ in FALLBACKS])
def test_what_orjson_refuses_or_would_change_is_left_to_json(
    spy: Spy, make: Callable[[JsonEncoder], bytes]
) -> None:
    got = outcome(make, spied(spy))
    assert got == outcome(make, STDLIB)
    if got[0] == "sent":
        assert all(got[1] is not data for data in spy.outputs), "orjson's bytes were sent"


def test_an_orjson_fragment_is_refused_as_json_refuses_it(spy: Spy) -> None:
    orjson = sys.modules["orjson"]
    if not hasattr(orjson, "Fragment"):
        pytest.skip("this orjson has no Fragment")
    make = event({"raw": orjson.Fragment(b"[1,2]")})
    got = outcome(make, spied(spy))
    assert got == outcome(make, STDLIB) and got[0] == "refused"
    assert spy.outputs == [], "orjson was called"


@pytest.mark.parametrize("text", ["a" * 20, "\x7f" * 20, "\x01" * 20, '"\\' * 10])
@pytest.mark.parametrize("slack", [-1, 0, 1])
def test_the_size_limit_refuses_the_same_events_with_the_same_message(
    spy: Spy, text: str, slack: int
) -> None:
    """Around the limit (the standard encoder's size plus ``slack``), orjson is bypassed."""
    properties = {"t": text * 100}
    size = len(event(properties)(STDLIB))
    make: Callable[[JsonEncoder], bytes] = lambda encoder: encode_event(  # noqa: E731
        "u", "e", properties, STAMP, size + slack, encoder
    )
    got = outcome(make, spied(spy))
    assert got == outcome(make, STDLIB)
    assert got[0] == ("refused" if slack < 0 else "sent")


def test_the_environment_variable_forces_the_standard_encoder() -> None:
    assert choose_encoder({JSON_ENV: "json"}) is STDLIB
    assert choose_encoder({JSON_ENV: " JSON "}) is STDLIB


def test_without_orjson_the_standard_encoder_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson raises ImportError
    assert choose_encoder({}) is STDLIB


def test_the_client_chooses_its_encoder_when_it_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("orjson", reason=ORJSON_ABSENT)
    monkeypatch.delenv(JSON_ENV, raising=False)
    fast = Trubrics("sk-test", disabled=True)
    monkeypatch.setenv(JSON_ENV, "json")
    plain = Trubrics("sk-test", disabled=True)
    monkeypatch.delenv(JSON_ENV)  # read at construction only: the clients keep their choice
    assert (fast._encoder.name, plain._encoder.name) == ("orjson", "json")
    fast.close()
    plain.close()
