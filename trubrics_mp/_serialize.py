"""Turning ``track()`` arguments into wire bytes (pure; runs in the caller).

Serialising in the caller means a bad event is refused where it is made, with
a clear message, and can never poison the batch of another event. A refusal
is an :class:`InvalidEvent`; its ``reason`` is the counter it is dropped under:

- ``invalid_field``: a field of the wrong type (``user_id`` not a non-empty
  string, ``properties`` not a dict, ``timestamp`` not a datetime...).
- ``unserialisable``: a value JSON cannot hold (an object, bytes, NaN and
  infinities, a key that is not a string or a number, a value nested past
  the recursion limit or containing itself), or one the caller's own code
  failed to read or convert: any exception a caller's object raises here (a
  ``__iter__`` or ``utcoffset`` that raises, a datetime that overflows when
  moved to UTC) is caught and named, so the client's "internal error" is left
  to bugs of the library.
- ``key_collision``: two keys of one dict that would be the same JSON key
  (``1`` and ``"1"``, ``True`` and ``"true"``, ``None`` and ``"null"``): JSON
  keys are strings, so the encoder converts ``int``, ``float``, ``bool`` and
  ``None`` keys, and would otherwise send both.
- ``too_large``: an event over ``max_bytes`` once encoded. A string whose
  length alone passes the limit is refused before anything is encoded when
  it is an event field (``user_id``, ``prompt``...) or sits in a dict that
  holds containers or objects; a string value of a flat properties dict is
  measured once encoded (why: ``_values.py``).
- ``invalid_text``: a string holding a lone surrogate (half of a UTF-16 pair,
  such as ``"\\ud83d"``: from ``surrogateescape`` decoding, or a JavaScript
  string cut inside an emoji). UTF-8 cannot carry it and most JSON parsers
  refuse its ``\\udXXX`` escape. Such an event is refused, not repaired:
  replacing the half with U+FFFD would change the caller's data without a
  trace, while a refusal is counted and logged like any other bad value.

Conversions (nested values too):

- ``datetime`` -> ISO 8601 in UTC. A *naive* datetime is read as local time
  (Python's convention, and what ``datetime.now()`` returns), as the official
  SDK's wall-clock value meant; the wire timestamp always carries its offset.
- ``date`` -> ``YYYY-MM-DD``; ``UUID`` -> its string; ``Decimal`` -> a JSON
  number (finite values only); ``set``/``frozenset`` -> a list (sorted when the
  items can be sorted); ``tuple`` -> a list; keys ``int``/``float``/``bool``/
  ``None`` -> their JSON text, as the standard ``json`` module does.

Encoders: the standard ``json`` module's C encoder always, and ``orjson`` when
it imports and orjson gives what the standard encoder would send (see
``_fastjson``). Datetimes, dates and ``Decimal`` reach the same conversion
hook in both encoders.

Caveats: the checks of ``_values.py`` read the caller's containers before
the encoder does, so the methods of a container subclass (``items()``,
``__iter__``) run twice. The catch-alls wrap the places where the caller's
code runs (the encoder, its conversion hook, the walk, ``str(thread_id)``,
the timestamp's move to UTC); a bug of this module inside one of them would be
reported as ``unserialisable`` too, though still with its exception named.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import uuid
from collections.abc import Iterable
from decimal import Decimal
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Callable, Optional

from ._fastjson import JSON_ENV, STDLIB, JsonEncoder, choose_encoder, dump_fast
from ._values import (
    InvalidEvent,
    checked_properties,
    describe,
    lone_surrogate,
    raised_by,
    too_deep,
    too_large,
)

__all__ = [
    "JSON_ENV",
    "STDLIB",
    "InvalidEvent",
    "JsonEncoder",
    "choose_encoder",
    "encode_event",
    "encode_llm_event",
    "iso_utc",
]

_UTC = _dt.timezone.utc


def iso_utc(value: _dt.datetime) -> str:
    """ISO 8601 in UTC with its offset; a naive value is local time (``datetime.now()``)."""
    return value.astimezone(_UTC).isoformat()


def _to_json(value: Any) -> Any:
    """The encoder's hook for values JSON has no form for; the caller's code may raise."""
    try:
        return _convert(value)
    except InvalidEvent:
        raise
    except Exception as exc:  # a tzinfo's utcoffset(), a set subclass's __iter__...
        raise raised_by("properties", value, exc) from None


_FAST_HOOK_TYPES = frozenset((_dt.datetime, _dt.date))


def _fast_hook(value: Any) -> Any:
    """orjson's hook: the values of a flat dict the standard hook converts; else a fallback."""
    kind = type(value)
    if kind is Decimal:
        number = _convert(value)  # an InvalidEvent for NaN: orjson raises, json takes over
        if number - number:  # a finite Decimal over float's range: inf, which orjson writes null
            raise OverflowError("left to the standard encoder")
        return number
    if kind in _FAST_HOOK_TYPES:
        return _convert(value)  # any exception: orjson raises, the standard encoder takes over
    raise TypeError("left to the standard encoder")


def _convert(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return iso_utc(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            message = f"properties cannot be sent: Decimal {value} is not a finite number"
            raise InvalidEvent("unserialisable", message)
        return float(value)
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    raise InvalidEvent(
        "unserialisable",
        f"properties cannot be sent: a value of type {type(value).__name__} cannot be sent as JSON",
    )


def _make_encoder() -> Callable[[Any, int], Iterable[str]]:
    """One JSON encoder built once: ``JSONEncoder.encode`` rebuilds its C encoder per call.

    It returns the text in chunks, joined by the caller (one Python call less
    than a wrapper would cost). No circular-reference markers: a
    self-containing value ends in a ``RecursionError`` instead (in the checks
    of ``_values.py``, before the encoder), refused like any unserialisable value.
    """
    if c_make_encoder is None:  # no C accelerator (not CPython)
        encoder = json.JSONEncoder(default=_to_json, allow_nan=False, separators=(",", ":"))
        return lambda value, _indent: (encoder.encode(value),)
    encode: Callable[[Any, int], Iterable[str]] = c_make_encoder(
        None, _to_json, encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return encode


_encode_chunks = _make_encoder()


class _UtcClock:
    """``datetime.now(timezone.utc).isoformat()``, at half the cost: the date and
    time of day are formatted once per second, only the microseconds every call."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now_iso(self) -> str:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)  # integers: no float
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._second = second
        return f"{self._prefix}{micros:06d}+00:00"


_clock = _UtcClock()


def _timestamp(value: object) -> str:
    if value is None:
        return _clock.now_iso()
    if isinstance(value, _dt.datetime):
        try:
            return iso_utc(value)
        except Exception as exc:  # a tzinfo whose utcoffset() raises, datetime.max at UTC-5
            raise raised_by("timestamp", value, exc) from None
    raise InvalidEvent("invalid_field", f"timestamp must be a datetime or None, not {_kind(value)}")


def _kind(value: object) -> str:
    return type(value).__name__


_REQUIRED, _ANY, _OPTIONAL = "a non-empty string", "a string", "a string or None"


def _require_text(name: str, value: object, max_bytes: int) -> None:
    """A non-empty string no longer than the limit (the hot path of ``track()``)."""
    if type(value) is not str or not value or len(value) > max_bytes:
        _check_text(name, value, max_bytes, _REQUIRED)


def _check_text(name: str, value: object, max_bytes: int, need: str) -> None:
    """Refuse a text field (or pass a ``str`` subclass), calling none of the caller's methods."""
    if value is None and need == _OPTIONAL:
        return
    if not isinstance(value, str):
        raise InvalidEvent("invalid_field", f"{name} must be {need}, not {_kind(value)}")
    length = str.__len__(value)
    if length == 0 and need == _REQUIRED:
        raise InvalidEvent("invalid_field", f"{name} must be {need}, not an empty string")
    if length > max_bytes:
        raise too_large(f"{name} is {length} characters long", max_bytes)


def _thread_id(value: object, max_bytes: int) -> Optional[str]:
    """``str(thread_id)`` as trubrics 1.8.5 sends it (None when falsy)."""
    try:
        text = str(value) if value else None
    except Exception as exc:  # the caller's __bool__ or __str__
        raise raised_by("thread_id", value, exc) from None
    _check_text("thread_id", text, max_bytes, _OPTIONAL)
    return text


def _dump(payload: dict[str, Any], max_bytes: int) -> bytes:
    try:
        text = "".join(_encode_chunks(payload, 0))
    except InvalidEvent:
        raise
    except RecursionError:
        raise too_deep() from None
    except Exception as exc:  # NaN, a tuple key; or the caller's code, read again by the encoder
        message = f"properties cannot be sent: {describe(exc)}"
        raise InvalidEvent("unserialisable", message) from None
    if "\\" in text and "\\ud" in text:  # a surrogate escape, or lookalike text: rare
        unit = lone_surrogate(text)
        if unit is not None:
            raise InvalidEvent(
                "invalid_text",
                f"a string holds a lone surrogate ({unit}), half of a UTF-16 pair, "
                "which UTF-8 cannot carry",
            )
    data = text.encode("ascii")
    if len(data) > max_bytes:
        raise InvalidEvent(
            "too_large", f"event is {len(data)} bytes once encoded, over the limit of {max_bytes}"
        )
    return data


def encode_event(
    user_id: object,
    event: object,
    properties: object,
    timestamp: object,
    max_bytes: int,
    encoder: JsonEncoder = STDLIB,
) -> bytes:
    """The JSON object ``track()`` sends, as ASCII bytes (non-ASCII text is \\u-escaped)."""
    if (  # _require_text() twice, inlined: this is the hot path of track()
        type(user_id) is not str
        or type(event) is not str
        or not user_id
        or not event
        or len(user_id) > max_bytes
        or len(event) > max_bytes
    ):
        _check_text("user_id", user_id, max_bytes, _REQUIRED)
        _check_text("event", event, max_bytes, _REQUIRED)
    checked = checked_properties(properties, max_bytes)
    payload = {
        "user_id": user_id,
        "event": event,
        "properties": checked,
        "timestamp": _timestamp(timestamp),
    }
    if encoder.dumps is not None:
        data = dump_fast(encoder, payload, checked, max_bytes, _fast_hook)
        if data is not None:
            return data
    return _dump(payload, max_bytes)


def encode_llm_event(
    *,
    user_id: object,
    prompt: object,
    generation: object,
    prompt_event_name: object,
    generation_event_name: object,
    assistant_id: object,
    properties: object,
    timestamp: object,
    latency: object,
    thread_id: object,
    max_bytes: int,
    encoder: JsonEncoder = STDLIB,
) -> bytes:
    """The JSON object ``track_llm()`` sends, as ASCII bytes (keys as in trubrics 1.8.5)."""
    _require_text("user_id", user_id, max_bytes)
    _check_text("prompt", prompt, max_bytes, _ANY)
    _check_text("generation", generation, max_bytes, _ANY)
    _require_text("prompt_event_name", prompt_event_name, max_bytes)
    _require_text("generation_event_name", generation_event_name, max_bytes)
    _check_text("assistant_id", assistant_id, max_bytes, _OPTIONAL)
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))):
        raise InvalidEvent(
            "invalid_field", f"latency must be a number or None, not {_kind(latency)}"
        )
    checked = checked_properties(properties, max_bytes)
    payload = {
        "user_id": user_id,
        "prompt": prompt,
        "generation": generation,
        "prompt_event_name": prompt_event_name,
        "generation_event_name": generation_event_name,
        "assistant_id": assistant_id,
        "properties": checked,
        "timestamp": _timestamp(timestamp),
        "latency": latency,
        "thread_id": _thread_id(thread_id, max_bytes),
    }
    plain = (
        latency is None
        or type(latency) is int
        or (type(latency) is float and not latency - latency)
    )
    if encoder.dumps is not None and plain:  # not NaN nor infinity, nor an Enum orjson would write
        data = dump_fast(encoder, payload, checked, max_bytes, _fast_hook)
        if data is not None:
            return data
    return _dump(payload, max_bytes)
