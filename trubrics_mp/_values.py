"""Refusals of the caller's values, shared by the encoder and its checks (pure).

Every refusal is an :class:`InvalidEvent`, whose ``reason`` is the counter the
client drops the event under. The caller's own objects run code while an
event is encoded (``__iter__``, ``items()``, ``utcoffset()``, ``__str__``...);
whatever they raise is turned into an ``unserialisable`` refusal that names
the type of the value and the exception, so the client's "internal error"
is left to bugs of the library.
"""

from __future__ import annotations

from typing import Any, Optional

_SHOWN = 40  # characters of a key or of an exception message quoted in a log line


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
