"""The stock ``multiprocessing.Queue`` failures, each next to trubrics-mp passing it.

Each scenario of ``support/pitfalls.py`` runs the same situation with both
queues in a separate application process. The stock side is asserted to
fail (so these tests also notice if CPython ever fixes it); our side is
asserted to deliver everything, exactly once.
"""

from __future__ import annotations

import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.scenarios import AppRunner


@pytest.fixture
def pitfalls(app: AppRunner) -> AppRunner:
    app.module = "support.pitfalls"
    return app


def test_os_exit_loses_what_the_feeder_thread_had_not_written(
    pitfalls: AppRunner, collector: CollectorProcess
) -> None:
    result = pitfalls.run("os_exit_after_put", options={"flush_at": 50})
    assert result.get("stock_received") < 100
    assert result.get("ours_buffered_in_process") == 0  # all in the kernel already
    assert result.get("ours_flushed") is True
    wait_exactly_once(collector, {"os_exit": 100})


def test_a_raw_fork_leaves_the_child_without_a_feeder_thread(
    pitfalls: AppRunner, collector: CollectorProcess
) -> None:
    result = pitfalls.run("fork_after_use")
    assert result.get("stock_received") == 0
    assert result.get("ours_flushed") is True
    wait_exactly_once(collector, {"parent": 1, "forked": 50})


def test_a_writer_killed_holding_the_lock_wedges_the_others(
    pitfalls: AppRunner, collector: CollectorProcess
) -> None:
    result = pitfalls.run("writer_killed_holding_the_lock", options={"flush_at": 5})
    assert result.get("stock_received") == 0
    assert result.get("ours_flushed") is True  # no corrupt message: nothing refused
    events = collector.wait_for_events(10, src=None)
    after = [e for e in events if e["properties"]["src"] == "after"]
    assert sorted(e["properties"]["seq"] for e in after) == list(range(10))


def test_a_forked_child_exiting_normally_kills_daemonic_helpers(
    pitfalls: AppRunner, collector: CollectorProcess
) -> None:
    result = pitfalls.run("child_exit_kills_daemons")
    assert result.get("stock_helper_alive") is False
    assert result.get("stock_helper_exitcode") == -15  # SIGTERM from the child's atexit
    assert result.get("ours_flusher_kept") is True
    assert result.get("ours_flushed") is True
    wait_exactly_once(collector, {"child": 5, "parent": 5})
