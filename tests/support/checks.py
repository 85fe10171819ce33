"""Assertions over what the collector stored."""

from __future__ import annotations

import collections
import time
from typing import Any

from support.collector import CollectorProcess


def counts(events: list[dict[str, Any]]) -> collections.Counter[tuple[str, int]]:
    """How many times each ``(src, seq)`` was stored."""
    return collections.Counter(
        (e["properties"]["src"], e["properties"]["seq"])
        for e in events
        if isinstance(e.get("properties"), dict) and "src" in e["properties"]
    )


def expected_keys(expected: dict[str, int]) -> set[tuple[str, int]]:
    return {(src, seq) for src, n in expected.items() for seq in range(n)}


def wait_exactly_once(
    collector: CollectorProcess, expected: dict[str, int], timeout: float = 90.0
) -> list[dict[str, Any]]:
    """Wait until every expected event is stored, then check none is stored twice."""
    return wait_delivered(collector, expected_keys(expected), set(), timeout)


def wait_delivered(
    collector: CollectorProcess,
    required: set[tuple[str, int]],
    optional: set[tuple[str, int]],
    timeout: float = 90.0,
) -> list[dict[str, Any]]:
    """Every required event stored once; optional ones at most once; nothing else."""
    deadline = time.monotonic() + timeout
    while True:
        events = collector.events()
        seen = counts(events)
        missing = required - set(seen)
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(missing)} of {len(required)} events never arrived,"
                f" e.g. {sorted(missing)[:5]}"
            )
        time.sleep(0.1)
    duplicated = {key: n for key, n in seen.items() if n > 1}
    assert not duplicated, f"events stored more than once: {sorted(duplicated.items())[:10]}"
    unexpected = set(seen) - required - optional
    assert not unexpected, f"events nobody tracked: {sorted(unexpected)[:10]}"
    return events
