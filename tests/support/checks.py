"""Assertions over what the collector stored."""

from __future__ import annotations

import collections
from typing import Any

from support.collector import CollectorProcess
from support.processes import poll_until


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
    events: list[dict[str, Any]] = []

    def missing() -> set[tuple[str, int]]:
        return required - set(counts(events))

    def all_arrived() -> bool:
        events[:] = collector.events()
        return not missing()

    def state() -> str:
        gone = missing()
        return f"{len(required)} events: {len(gone)} never arrived, e.g. {sorted(gone)[:5]}"

    poll_until(all_arrived, timeout, state, interval=0.1)
    seen = counts(events)
    duplicated = {key: n for key, n in seen.items() if n > 1}
    assert not duplicated, f"events stored more than once: {sorted(duplicated.items())[:10]}"
    unexpected = set(seen) - required - optional
    assert not unexpected, f"events nobody tracked: {sorted(unexpected)[:10]}"
    return events
