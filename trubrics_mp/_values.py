"""Checks of the caller's values made around JSON encoding (pure; runs in the caller).

The C JSON encoder is fast but all or nothing: it encodes a 10 MB string in
full before the size limit can refuse it (about 30 ms, 140 ms for accented
text), and it escapes a lone surrogate as ``\\udXXX``, which most JSON
parsers refuse. Around it:

- :func:`checked_properties` runs before encoding. Its hot path is a flat
  dict, which CPython's garbage collector leaves untracked (no container and
  no class instance in it, which ``gc.is_tracked`` tells in constant time):
  it is passed as it is. Any other dict is walked: each string's length, plus
  one character per value, counts towards a lower bound of the encoded size,
  refused (``too_large``) as soon as it passes the limit, so a huge string
  there is never encoded, however deep.
- :func:`lone_surrogate` runs on the encoded text, only when it holds a
  surrogate escape at all; an event with a lone surrogate is refused
  (``invalid_text``), never sent and never altered.
- The caller's own objects run code while they are read (``__iter__``,
  ``items()``, ``utcoffset()``, ``__str__``...): whatever they raise becomes an
  ``unserialisable`` refusal naming the type of the value and the exception,
  so the client's "internal error" is left to bugs of the library.

Caveats:

- The string values of a flat dict are not measured before encoding: a loop
  over the values costs about 5% of ``encode_event`` (more than all the other
  checks together), so a string there over the limit is encoded once, then
  refused by the size check (``too_large``). The event fields (``user_id``,
  ``prompt``...) are measured before encoding.
- The walk reads the caller's containers once more than the encoder does
  (``items()`` of a dict subclass, ``__iter__`` of a list or set subclass).
- A value nested deeper than the recursion limit allows is refused
  (``unserialisable``), as the encoder refuses it.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable
from typing import Any, Callable, Optional

_PLAIN = frozenset((int, float, bool, type(None)))
_EXACT_SETS = frozenset((set, frozenset))
# Not every Python has it (PyPy): then every dict is walked.
_is_tracked: Callable[[object], bool] = getattr(gc, "is_tracked", lambda _value: True)
_SHOWN = 40  # characters of a key or of an exception message quoted in a log line
# Tokens of encode_basestring_ascii's output that start with a backslash: an
# escaped backslash, a surrogate pair, or (group 1) a surrogate on its own.
_SURROGATE_TOKENS = re.compile(
    r"\\(?:\\|ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|u(d[89a-f][0-9a-f]{2}))"
)


class InvalidEvent(ValueError):
    """An event that cannot be sent; ``reason`` is the counter it is dropped under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception the caller's code raised, shortened, never raising."""
    try:
        message = str(exc)
    except Exception:
        message = "(its message cannot be shown)"
    if len(message) > 4 * _SHOWN:
        message = message[: 4 * _SHOWN] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def raised_by(what: str, value: object, exc: BaseException) -> InvalidEvent:
    """The refusal of ``what`` when the caller's ``value`` raised ``exc`` while being read."""
    kind = type(value).__name__
    return InvalidEvent(
        "unserialisable", f"{what} cannot be sent: a value of type {kind} raised {describe(exc)}"
    )


def too_large(what: str, max_bytes: int) -> InvalidEvent:
    """The refusal of ``what`` ("user_id is 70000 characters long") before encoding."""
    return InvalidEvent(
        "too_large", f"{what}, over the limit of {max_bytes} bytes (refused before encoding)"
    )


def too_deep() -> InvalidEvent:
    return InvalidEvent(
        "unserialisable", "properties cannot be sent: they nest too deeply or contain themselves"
    )


def checked_properties(value: object, max_bytes: int) -> Optional[dict[Any, Any]]:
    """``value`` if it may be encoded: None, or a dict whose strings pass the size check.

    The hot path: CPython's garbage collector does not track a dict that holds
    no container and no instance of a class (``gc.is_tracked`` is False), so
    such a dict holds nothing to walk into and is passed as it is. Its string
    values are not measured here (a loop over them would cost about 5% of
    ``encode_event``); the encoded size is checked after encoding.
    """
    if value is None:
        return None
    if type(value) is dict and not _is_tracked(value):
        return value
    if not isinstance(value, dict):
        raise InvalidEvent(
            "invalid_field", f"properties must be a dict or None, not {type(value).__name__}"
        )
    try:
        room = _walk_dict(value, max_bytes)
    except InvalidEvent:
        raise
    except RecursionError:
        raise too_deep() from None
    except Exception as exc:  # the caller's own code: a dict subclass's items(), say
        raise raised_by("properties", value, exc) from None
    if room < 0:
        raise too_large(f"properties take at least {max_bytes - room} bytes", max_bytes)
    return value


# The walk: each function returns ``room`` less a lower bound of the encoded size
# of what it read, and stops reading once that is below zero. Every value read
# takes at least one byte, so a walk ends within ``max_bytes`` values, even in
# a value that holds one list many times over.


def _walk_dict(value: dict[Any, Any], room: int) -> int:
    if type(value) is dict:
        keys: Iterable[Any] = value
        values: Iterable[Any] = value.values()
    else:
        pairs = _copied(value, value.items)
        keys, values = [key for key, _ in pairs], [item for _, item in pairs]
    room -= 2
    for key in keys:
        if type(key) is str:
            room -= len(key) + 3
        else:
            room -= (str.__len__(key) if isinstance(key, str) else 0) + 3
    return _walk_items(values, room) if room >= 0 else room


def _walk_items(items: Iterable[Any], room: int) -> int:
    for item in items:
        kind = type(item)
        if kind is str:
            room -= len(item) + 2
        elif kind in _PLAIN:
            room -= 1
        elif kind is dict:
            room = _walk_dict(item, room)
        elif kind is list or kind is tuple:
            room = _walk_items(item, room - 2)
        else:
            room = _walk_other(item, room)
        if room < 0:
            break
    return room


def _walk_other(item: Any, room: int) -> int:
    """A subclass, a set, or a value the encoder's hook converts (counted as one byte)."""
    if isinstance(item, str):
        return room - str.__len__(item) - 2
    if isinstance(item, dict):
        return _walk_dict(item, room)
    if isinstance(item, (list, tuple, set, frozenset)):
        exact = type(item) in _EXACT_SETS
        return _walk_items(item if exact else _copied(item, item.__iter__), room - 2)
    return room - 1


def _copied(value: object, read: Callable[[], Iterable[Any]]) -> list[Any]:
    """What the encoder reads from a subclass, through its own ``items()`` or ``__iter__``."""
    try:
        return list(read())
    except Exception as exc:
        raise raised_by("properties", value, exc) from None


def lone_surrogate(text: str) -> Optional[str]:
    """The first lone surrogate escaped in JSON ``text`` (ASCII), as ``U+D83D``; else None.

    A valid pair (an emoji) is escaped as two surrogates too, and ``\\\\ud83d``
    is a backslash followed by letters: the scan reads escaped backslashes and
    pairs as whole tokens, so whatever else matches is a lone surrogate.
    """
    for token in _SURROGATE_TOKENS.finditer(text):
        if token.lastindex:
            return f"U+{token.group(1).upper()}"
    return None
