"""The optional fast encoder: ``orjson`` (the ``fast`` extra), used only where it
gives what the standard encoder would send.

A client chooses its :class:`JsonEncoder` once, at construction
(:func:`choose_encoder`): orjson when it imports, unless the
``TRUBRICS_MP_JSON=json`` environment variable forces the standard encoder.
``_serialize`` calls :func:`dump_fast` first and the standard encoder when it
returns None. orjson only takes an event whose ``properties`` are None or a
flat dict (one CPython's garbage collector does not track: no container, no
class instance), and its output is kept only when it is what the standard encoder would send:

- any exception (a key that is not a string, an integer over 64 bits, a lone
  surrogate, a subclass of a builtin type, a value the hook does not convert,
  a ``datetime`` whose ``utcoffset()`` raises) falls back to the standard
  encoder, which refuses or sends the event exactly as without orjson;
- orjson writes NaN and infinities as ``null``: a float property (or
  ``latency``) that is not finite falls back, and so does a ``Decimal`` too
  large for a float (``Decimal("1e400")``, which becomes infinity);
- non-ASCII output falls back (the wire stays ASCII, \\u-escaped), and so does
  an output over a sixth of ``max_bytes`` (a byte of orjson's output is at most
  six of the standard encoder's: ``\\u007f``), so the size limit refuses the
  same events with the same message;
- ``orjson.Fragment`` values (embedded as raw JSON by orjson) fall back.

Datetimes, dates and ``Decimal`` reach the same conversion hook in both
encoders (orjson's own datetime form is turned off). On a fallback, the
caller's objects are read once more (a ``utcoffset()``, say).
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

JSON_ENV = "TRUBRICS_MP_JSON"
# Not every Python has it (PyPy): then no dict is flat and orjson is never used.
_is_tracked: Callable[[object], bool] = getattr(gc, "is_tracked", lambda _value: True)


class _NoFragment:
    """Stands for ``orjson.Fragment`` with an orjson that has none: no value is of this type."""


@dataclass(frozen=True)
class JsonEncoder:
    """The JSON encoders one client uses: the standard one, and orjson's ``dumps`` or None.

    ``dumps`` is called as ``dumps(value, default=..., option=option)``;
    ``fragment`` is ``orjson.Fragment``, whose bytes orjson embeds as they are.
    """

    name: str
    dumps: Optional[Callable[..., bytes]] = None
    option: int = 0
    fragment: type = _NoFragment


STDLIB = JsonEncoder("json")


def choose_encoder(environ: Mapping[str, str]) -> JsonEncoder:
    """orjson when it imports, unless ``TRUBRICS_MP_JSON=json`` asks for the standard encoder."""
    if environ.get(JSON_ENV, "").strip().lower() == "json":
        return STDLIB
    try:
        orjson = importlib.import_module("orjson")
    except ImportError:
        return STDLIB
    option = (
        orjson.OPT_PASSTHROUGH_DATETIME  # to the hook: UTC, as the standard encoder sends them
        | orjson.OPT_PASSTHROUGH_SUBCLASS  # to the hook, which falls back: read as json reads them
        | orjson.OPT_PASSTHROUGH_DATACLASS  # the standard encoder refuses them
    )
    return JsonEncoder("orjson", orjson.dumps, option, getattr(orjson, "Fragment", _NoFragment))


def dump_fast(
    encoder: JsonEncoder,
    payload: dict[str, Any],
    properties: object,
    max_bytes: int,
    hook: Callable[[Any], Any],
) -> Optional[bytes]:
    """orjson's bytes when they are what the standard encoder would send; None for a
    fallback. ``hook`` converts what JSON has no form for, raising to fall back."""
    if encoder.dumps is None:
        return None
    if properties is not None:
        if type(properties) is not dict or _is_tracked(properties):
            return None  # containers, class instances (an Enum orjson would write), subclasses
        fragment = encoder.fragment
        for value in properties.values():
            kind = type(value)
            # NaN and infinities (orjson writes null): x - x is NaN, true, for them only.
            if (kind is float and value - value) or kind is fragment:
                return None
    try:
        data = encoder.dumps(payload, default=hook, option=encoder.option)
    except Exception:  # a non-str key, a big integer, a lone surrogate: json decides
        return None
    if len(data) * 6 > max_bytes or not data.isascii():
        return None
    return data
