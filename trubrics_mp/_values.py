"""Checks of the caller's values made around JSON encoding (pure; runs in the caller).

The C JSON encoder is fast but all or nothing: it encodes a 10 MB string in
full before the size limit can refuse it (about 30 ms, 140 ms for accented
text), it writes the keys ``1`` and ``"1"`` of one dict as the same JSON key
twice, and it escapes a lone surrogate as ``\\udXXX``, which most JSON
parsers refuse. Around it:

- :func:`checked_properties` runs before encoding. Its hot path is a flat
  dict, which CPython's garbage collector leaves untracked (no container and
  no class instance in it, which ``gc.is_tracked`` tells in constant time):
  only its keys are looked at (all ``str``, or their collisions are checked).
  Any other dict is walked: the keys of every dict in it are checked, and each
  string's length, plus one character per value, counts towards a lower bound
  of the encoded size, refused (``too_large``) as soon as it passes the limit,
  so a huge string there is never encoded, however deep.
- :func:`check_keys` converts keys as the encoder does (``1`` -> ``"1"``,
  ``True`` -> ``"true"``, ``None`` -> ``"null"``) and refuses two that meet
  (``key_collision``). All-``str`` keys cannot meet, so they cost nothing more.
- :func:`lone_surrogate` runs on the encoded text, only when it holds an
  escape at all; an event with a lone surrogate is refused (``invalid_text``),
  never sent and never altered.

Caveats:

- The string values of a flat dict are not measured before encoding: a loop
  over the values costs about 5% of ``encode_event`` (more than the whole of
  these checks), so a string there over the limit is encoded once, then
  refused by the size check (``too_large``). The event fields (``user_id``,
  ``prompt``...) are measured before encoding.
- The walk reads the caller's containers once more than the encoder does
  (``items()`` of a dict subclass, ``__iter__`` of a list or set subclass).
  An exception raised there, or by any of the caller's objects, becomes an
  ``unserialisable`` refusal naming the type and the exception.
- A value nested deeper than the recursion limit allows is refused
  (``unserialisable``), as the encoder refuses it.
- A key of a ``str`` subclass is written as its text, so it can meet an
  equal ``str`` key when the subclass hashes differently (caught); two exact
  ``str`` keys can never meet.
"""

from __future__ import annotations

import gc
import math
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
    """``value`` if it may be encoded: None, or a dict whose keys and strings pass the checks.

    The hot path: CPython's garbage collector does not track a dict that holds
    no container and no instance of a class (``gc.is_tracked`` is False), so
    such a dict holds nothing to walk into and only its keys are looked at.
    Its string values are not measured here (that loop would cost more than
    all the other checks together); the encoded size is checked after encoding.
    """
    if value is None:
        return None
    if type(value) is dict and not _is_tracked(value):
        for key in value:
            if type(key) is not str:
                break
        else:
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
    plain_keys = True
    for key in keys:
        if type(key) is str:
            room -= len(key) + 3
        else:
            plain_keys = False
            room -= (str.__len__(key) if isinstance(key, str) else 0) + 3
    if not plain_keys:
        check_keys(keys)
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


def check_keys(keys: Iterable[Any]) -> None:
    """Refuse the keys of one dict when two become the same JSON key (``1`` and ``"1"``)."""
    seen: dict[str, Any] = {}
    for key in keys:
        text = _key_text(key)
        if text is None:
            continue  # a key JSON cannot hold: the encoder refuses it
        if text in seen:
            raise InvalidEvent(
                "key_collision",
                f"properties cannot be sent: the keys {_shown(seen[text], text)} and "
                f"{_shown(key, text)} would both be the JSON key {text[:_SHOWN]!r}",
            )
        seen[text] = key


def _key_text(key: object) -> Optional[str]:
    """The JSON key the encoder writes for ``key`` (its own rules, in its order)."""
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, float):
        return float.__repr__(key) if math.isfinite(key) else None
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    return None


def _shown(key: object, text: str) -> str:
    """``'1'``, ``1 (int)``, ``True (bool)``: the key, shortened, calling none of its methods."""
    if type(key) is str:
        return repr(text[:_SHOWN])
    if key is True or key is False or key is None:
        shown = repr(key)
    else:
        shown = repr(text[:_SHOWN]) if isinstance(key, str) else text[:_SHOWN]
    return f"{shown} ({type(key).__name__})"


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
