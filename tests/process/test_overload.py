"""Overload with default settings against an API answering in 50 ms: nothing is dropped.

The flusher holds up to ``max_queue_bytes`` (64 MiB) and then stops reading,
so what comes next waits in the kernel and then in each process's buffer
(``process_buffer_bytes``, 8 MiB); batches that wait share requests of up to
100 events. The flusher's peak RSS is reported on the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.scenarios import AppRunner

LATENCY_MS = 50
TIMEOUT_S = 600


@pytest.fixture
def slow_api(tmp_path: Path) -> Iterator[CollectorProcess]:
    with CollectorProcess(tmp_path, latency_ms=LATENCY_MS) as server:
        yield server


def test_100_000_events_right_after_construction_all_arrive_once(
    tmp_path: Path, slow_api: CollectorProcess
) -> None:
    n = 100_000
    result = AppRunner(slow_api.url, tmp_path).run("burst", n=n, timeout=TIMEOUT_S)
    local = result.get("local")
    assert local["dropped"] == {} and local["tracked"] == n
    assert result.get("flushed") is True and result.get("closed") is True
    wait_exactly_once(slow_api, {"burst": n}, timeout=TIMEOUT_S)
    print(f"flusher peak RSS: {result.get('peak_rss_kib') / 1024:.1f} MiB")


def test_64_processes_times_2_000_at_once_all_arrive_once(
    tmp_path: Path, slow_api: CollectorProcess
) -> None:
    processes, n = 64, 2_000
    result = AppRunner(slow_api.url, tmp_path).run(
        "burst", n=n, processes=processes, timeout=TIMEOUT_S
    )
    assert result.get("exitcodes") == [0] * processes
    assert result.get("flushed") is True and result.get("closed") is True
    expected = {f"child-{i}": n for i in range(processes)}
    wait_exactly_once(slow_api, expected, timeout=TIMEOUT_S)
    print(f"flusher peak RSS: {result.get('peak_rss_kib') / 1024:.1f} MiB")
