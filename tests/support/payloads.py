"""Events as the official SDK sends them, for tests of the collector."""

from __future__ import annotations

from typing import Any

NAIVE = "2026-11-29T10:00:00"
"""A timestamp without a UTC offset, which the collector refuses."""


def plain_event(i: int = 0, user: str = "u-1", **changes: Any) -> dict[str, Any]:
    event = {
        "user_id": user,
        "event": "Sign up",
        "properties": {"i": i},
        "timestamp": "2026-11-29T10:00:00.000000+00:00",
    }
    return {**event, **changes}


def llm_event(**changes: Any) -> dict[str, Any]:
    event = {
        "user_id": "u-1",
        "prompt": "hi",
        "generation": "hello",
        "prompt_event_name": "Prompt",
        "generation_event_name": "Generation",
        "assistant_id": "gpt-4o",
        "properties": {},
        "timestamp": "2026-11-29T10:00:00.000000+00:00",
        "latency": 1.2,
        "thread_id": "t-1",
    }
    return {**event, **changes}
