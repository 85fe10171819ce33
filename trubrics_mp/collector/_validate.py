"""Validation of decoded request bodies, as strict as the Trubrics ingestion API.

Pure functions only: no I/O, no logging. ``validate_batch`` either returns the events
unchanged or raises ``BatchError`` whose ``detail`` names the offending index and
field, e.g. ``events[3].user_id: expected a string``.

Caveat: timestamps must be parseable by ``datetime.fromisoformat`` *of the running
interpreter*. Before Python 3.11 that function only accepts the output format of
``datetime.isoformat()`` (no ``Z`` suffix), which is what the official SDK sends.
"""

import math
from datetime import datetime
from typing import Any, Callable, Optional

MAX_BATCH_SIZE = 100
"""Largest batch the official SDK sends in one request (``MAX_FLUSH_BATCH_SIZE``)."""

KIND_EVENT = "event"
KIND_LLM_EVENT = "llm_event"
KINDS = (KIND_EVENT, KIND_LLM_EVENT)

Checker = Callable[[object], Optional[str]]
"""Returns None when the value is acceptable, else the reason (``expected ...``)."""


class BatchError(ValueError):
    """A request body that the ingestion API would refuse (HTTP 422)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _string(value: object) -> Optional[str]:
    return None if isinstance(value, str) else "expected a string"


def _string_or_null(value: object) -> Optional[str]:
    return None if value is None or isinstance(value, str) else "expected a string or null"


def _object_or_null(value: object) -> Optional[str]:
    return None if value is None or isinstance(value, dict) else "expected an object or null"


def _number_or_null(value: object) -> Optional[str]:
    """Accept int/float (not bool, not NaN or infinity) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "expected a number or null"
    if isinstance(value, float) and not math.isfinite(value):
        return "expected a finite number or null"
    return None


def _timestamp(value: object) -> Optional[str]:
    """Accept an ISO 8601 string that carries a UTC offset."""
    if not isinstance(value, str):
        return "expected an ISO 8601 timestamp string"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return "expected an ISO 8601 timestamp string"
    if parsed.utcoffset() is None:
        return "expected a timestamp with a UTC offset (e.g. +00:00)"
    return None


EVENT_FIELDS: dict[str, Checker] = {
    "user_id": _string,
    "event": _string,
    "properties": _object_or_null,
    "timestamp": _timestamp,
}
"""Fields of a plain event (``POST /publish_events``), in checking order."""

LLM_EVENT_FIELDS: dict[str, Checker] = {
    "user_id": _string,
    "prompt": _string,
    "generation": _string,
    "prompt_event_name": _string,
    "generation_event_name": _string,
    "assistant_id": _string_or_null,
    "properties": _object_or_null,
    "timestamp": _timestamp,
    "latency": _number_or_null,
    "thread_id": _string_or_null,
}
"""Fields of an LLM event (``POST /publish_llm_events``), in checking order."""

FIELDS_BY_KIND: dict[str, dict[str, Checker]] = {
    KIND_EVENT: EVENT_FIELDS,
    KIND_LLM_EVENT: LLM_EVENT_FIELDS,
}


def validate_event(item: object, index: int, kind: str) -> dict[str, Any]:
    """Check one event object; missing keys first, then unknown keys, then types."""
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise BatchError(f"{where}: expected an object")
    fields = FIELDS_BY_KIND[kind]
    for name in fields:
        if name not in item:
            raise BatchError(f"{where}.{name}: field required")
    for name in sorted(str(key) for key in item):
        if name not in fields:
            raise BatchError(f"{where}.{name}: unknown field")
    for name, check in fields.items():
        problem = check(item[name])
        if problem is not None:
            raise BatchError(f"{where}.{name}: {problem}")
    return item


def validate_batch(body: object, kind: str) -> list[dict[str, Any]]:
    """Return ``body`` as a list of events of ``kind`` or raise ``BatchError``.

    ``kind`` is ``"event"`` (``/publish_events``) or ``"llm_event"``
    (``/publish_llm_events``); any other value is a programming error (ValueError).
    """
    if kind not in FIELDS_BY_KIND:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {KINDS}")
    if not isinstance(body, list):
        raise BatchError(f"body: expected a JSON list of events, got {_json_type(body)}")
    if not 1 <= len(body) <= MAX_BATCH_SIZE:
        raise BatchError(f"body: expected 1 to {MAX_BATCH_SIZE} events, got {len(body)}")
    return [validate_event(item, index, kind) for index, item in enumerate(body)]


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
