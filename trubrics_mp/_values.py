"""Refusals of the caller's values, shared by the encoder and its checks (pure).

Every refusal is an :class:`InvalidEvent`, whose ``reason`` is the counter the
client drops the event under. The caller's own objects run code while an
event is encoded (``__iter__``, ``items()``, ``utcoffset()``, ``__str__``...);
whatever they raise is turned into an ``unserialisable`` refusal that names
the type of the value and the exception, so the client's "internal error"
is left to bugs of the library.

:func:`lone_surrogate` runs on the encoded text, and only when it holds a
surrogate escape at all: an event with a lone surrogate is refused
(``invalid_text``), never sent and never altered.
"""

from __future__ import annotations

import re
from typing import Any, Optional

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


def too_deep() -> InvalidEvent:
    return InvalidEvent(
        "unserialisable", "properties cannot be sent: they nest too deeply or contain themselves"
    )


def checked_properties(value: object, max_bytes: int) -> Optional[dict[Any, Any]]:
    """``value`` if it may be encoded: None or a dict."""
    if value is None or isinstance(value, dict):
        return value
    raise InvalidEvent(
        "invalid_field", f"properties must be a dict or None, not {type(value).__name__}"
    )


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
