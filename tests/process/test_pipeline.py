"""End to end: real application processes, a real flusher, the real collector."""

from __future__ import annotations

import datetime
import os
import sys
import threading
from pathlib import Path

import psutil
import pytest
from support.checks import wait_exactly_once
from support.collector import CollectorProcess
from support.processes import poll_until
from support.scenarios import API_KEY, AppResult, AppRunner

from trubrics_mp._config import MIB

START_METHODS = ["fork", "spawn", "forkserver"]
MAX_TRACK_S = 1.0  # the slowest track() call allowed while the flusher is stopped


def test_payloads_are_those_of_the_official_sdk(
    app: AppRunner, collector: CollectorProcess
) -> None:
    app.run("basic", n=3, n_llm=2)
    events = wait_exactly_once(collector, {"owner": 3, "owner-llm": 2})
    plain = [e for e in events if e["kind"] == "event"]
    llm = [e for e in events if e["kind"] == "llm_event"]
    assert set(plain[0]) >= {"user_id", "event", "properties", "timestamp"}
    assert plain[0]["user_id"] == "user-owner" and plain[0]["event"] == "Sign up"
    assert llm[0]["prompt"] == "prompt 0" and llm[0]["generation"] == "generation 0"
    assert llm[0]["assistant_id"] == "gpt-4o" and llm[0]["thread_id"] == "thread-1"
    assert llm[0]["prompt_event_name"] == "Prompt"
    assert llm[0]["generation_event_name"] == "Generation"
    assert llm[0]["latency"] == 0.5
    for event in events:
        stamp = datetime.datetime.fromisoformat(event["timestamp"])
        assert stamp.utcoffset() == datetime.timedelta(0)
    kinds = {b["kind"] for b in collector.batches()}
    assert kinds == {"event", "llm_event"}  # one request never mixes the two


def test_nothing_is_sent_for_an_empty_batch(app: AppRunner, collector: CollectorProcess) -> None:
    result = app.run("basic", n=0)
    assert result.get("closed") is True
    assert collector.batches() == []


def test_repr_and_logs_hide_the_api_key(app: AppRunner, collector: CollectorProcess) -> None:
    collector.set_faults(fail_status=401, down=True)  # so that the flusher logs errors
    result = app.run("basic", n=2, options={"flush_at": 1})
    assert "<hidden>" in result.get("repr")
    assert "the API key was rejected (HTTP 401)" in result.stderr
    assert API_KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("how", ["close", "return", "os_exit", "sigkill"])
def test_owner_loses_nothing_however_it_leaves(
    app: AppRunner, collector: CollectorProcess, how: str
) -> None:
    """``return`` relies on atexit; ``os_exit``/``sigkill`` on the flusher noticing."""
    expect_rc = -9 if how == "sigkill" else 0
    app.run("basic", n=100, exit=how, expect_rc=expect_rc, options={"flush_interval": 30})
    wait_exactly_once(collector, {"owner": 100})


@pytest.mark.parametrize("child_exit", ["return", "os_exit", "sigkill"])
@pytest.mark.parametrize("method", START_METHODS)
def test_children_share_the_owners_flusher(
    app: AppRunner, collector: CollectorProcess, method: str, child_exit: str
) -> None:
    result = app.run(
        "children",
        method=method,
        n_children=3,
        per_child=50,
        child_exit=child_exit,
        n_parent=10,
        n_parent_after=10,
    )
    expected = {f"child-{i}": 50 for i in range(3)} | {"parent": 10, "parent-after": 10}
    wait_exactly_once(collector, expected)
    stats = result.get("stats")
    assert stats["flusher_restarts"] == 0
    assert stats["flusher_pid"] == result.get("flusher_pid")
    assert len(stats["received_by_pid"]) == 4  # three children and the owner, one flusher


def test_children_share_batches(app: AppRunner, collector: CollectorProcess) -> None:
    """With a long interval, batches fill across processes: requests ~ events / flush_at."""
    app.run(
        "children",
        method="fork",
        n_children=4,
        per_child=25,
        child_exit="return",
        options={"flush_at": 50, "flush_interval": 60},
    )
    wait_exactly_once(collector, {f"child-{i}": 25 for i in range(4)})
    assert len(collector.batches()) == 2


@pytest.mark.parametrize("how", ["os", "libc"])
def test_forked_children_never_resend_the_parents_buffer(
    app: AppRunner, collector: CollectorProcess, how: str
) -> None:
    """``libc`` forks from C, like uWSGI: only the pid check can notice it."""
    result = app.run(
        "raw_fork",
        how=how,
        stall_flusher=True,
        buffered=100,
        n_children=2,
        per_child=20,
        child_flush=True,
        options={"max_queue_bytes": 256 * MIB},  # the socket alone may hold over 10 000
    )
    assert result.get("parent_buffered") == 100  # the children got a copy of a full buffer
    assert result.get("exitcodes") == [0, 0]
    expected = {"parent": result.get("n_parent"), "child-0": 20, "child-1": 20}
    wait_exactly_once(collector, expected)


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_workers_get_the_client_through_initializer(
    app: AppRunner, collector: CollectorProcess, method: str
) -> None:
    result = app.run("pool", method=method, tasks=40, processes=2, maxtasksperchild=5)
    wait_exactly_once(collector, {"pool": 40})
    assert result.get("stats")["flusher_restarts"] == 0


def test_track_never_blocks_on_a_stalled_flusher(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """The flusher is SIGSTOPped: track() returns, events buffer, overflow is counted."""
    n = 20_000  # more than any socket buffer holds (net.core.wmem_max)
    options = {"process_buffer_bytes": 50_000, "max_queue_bytes": 64 * MIB}
    result = app.run("stall", n=n, options=options)
    # A blocking track() would wait for the stopped flusher: for ever. A generous bound
    # (calls take microseconds) that a slow or loaded machine still meets.
    assert result.get("slowest_track_s") < MAX_TRACK_S
    queued, buffered = result.get("stalled"), result.get("buffered")
    dropped = result.get("dropped").get("buffer_full", 0)
    assert 0 < buffered <= 50_000 // 80  # each message is over 80 bytes
    assert queued + buffered + dropped == n
    assert dropped > 0
    assert result.get("flushed") is False  # some events were dropped: flush says so
    stats = result.get("stats")
    assert stats["delivered"] == queued + buffered


def test_a_killed_flusher_is_restarted_by_the_next_track(
    app: AppRunner, collector: CollectorProcess
) -> None:
    result = app.run("kill_flusher", n=20)
    assert result.get("flushed_before") is True
    assert result.get("flushed_after") is True
    assert result.get("new") != result.get("old")
    assert result.get("stats")["flusher_restarts"] == 1
    wait_exactly_once(collector, {"before": 20, "after": 20})


def test_a_flusher_killed_holding_events_makes_each_process_flush_false(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """The API is down: the flusher holds every event when it is SIGKILLed. The owner and
    a forked child each count their own events as lost and their next flush() says so."""
    collector.set_faults(down=True)
    result = app.run("flusher_killed_holding", n=30, wait_for="received")
    assert result.get("owner_flushed") is False and result.get("child_flushed") is False
    assert result.get("owner_dropped") == {"flusher_gone": 30}
    assert result.get("child_dropped") == {"flusher_gone": 30}
    assert "the flusher ended before confirming 30 events of this process" in result.stderr


def test_a_flusher_killed_after_delivering_costs_no_process_a_false_alarm(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """Nobody flushed before the kill: the flusher's confirmations, waiting unread in
    each process's socket, tell them that their events were delivered."""
    result = app.run("flusher_killed_holding", n=30, wait_for="delivered")
    assert result.get("owner_flushed") is True and result.get("child_flushed") is True
    assert result.get("owner_dropped") == {} and result.get("child_dropped") == {}
    wait_exactly_once(collector, {"owner": 30, "child": 30})


def test_events_a_killed_flusher_left_in_the_pipe_are_taken_back_and_delivered_once(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """The process keeps a read end of its pipe: a dead flusher's unread records come
    back to it, go to the next flusher, and no write ever meets a pipe without a
    reader (SIGPIPE is at its default action here, which would kill the process)."""
    result = app.run("flusher_killed_before_reading", n=100)
    assert result.get("flushed") is True and result.get("replaced") is True
    assert result.get("dropped") == {}
    assert result.get("closed") is True
    wait_exactly_once(collector, {"warm-up": 1, "before": 100, "after": 100})


def test_producers_killed_while_sending_do_not_corrupt_the_queue(
    app: AppRunner, collector: CollectorProcess
) -> None:
    result = app.run("killed_producers", n=50, rounds=15, options={"flush_at": 5})
    assert result.get("survivor_exit") == 0
    assert result.get("flushed") is True
    stats = result.get("stats")
    assert stats["failed_batches"] == 0  # a corrupt event would have been refused (422)
    events = collector.events()
    survivors = [e for e in events if e["properties"]["src"] == "child-0"]
    assert len(survivors) == 50


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the warning exists from 3.12 on")
def test_forking_after_creating_the_client_emits_no_deprecation_warning(app: AppRunner) -> None:
    result = app.run("no_fork_warning", python_flags=("-W", "error::DeprecationWarning"))
    assert result.get("exitcode") == 0
    assert "DeprecationWarning" not in result.stderr


def test_threads_of_one_process_neither_lose_nor_duplicate(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """Several threads meet the buffered path at once (the flusher is stopped)."""
    options = {"process_buffer_bytes": 64 * MIB, "max_queue_bytes": 64 * MIB, "flush_at": 100}
    result = app.run("threads", n_threads=4, per_thread=20_000, options=options)
    assert result.get("buffered") > 0  # the slow path was really taken
    assert result.get("flushed") is True
    wait_exactly_once(collector, {f"thread-{i}": 20_000 for i in range(4)})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (CI is root)")
def test_other_users_can_neither_feed_nor_impersonate_the_flusher(
    app: AppRunner, collector: CollectorProcess
) -> None:
    result = app.run("foreign_uid")
    assert result.get("foreign_user_reached_the_socket") == "no"
    wait_exactly_once(collector, {"owner": 1})  # and nothing from "foreign"


def test_a_sigtermed_flusher_serves_on_then_leaves_and_is_replaced(
    app: AppRunner, collector: CollectorProcess
) -> None:
    result = app.run("term_flusher", n=20, options={"shutdown_timeout": 1.0})
    assert result.get("flushed_during_grace") is True
    assert result.get("flushed_after_exit") is True
    assert result.get("stats")["flusher_restarts"] == 1
    wait_exactly_once(collector, {"after-term": 20, "after-exit": 20})


def test_close_succeeds_after_the_flusher_died_while_idle(
    app: AppRunner, collector: CollectorProcess
) -> None:
    result = app.run("kill_flusher", n=5, then_close=True)
    assert result.get("flushed_before") is True, result
    assert result.get("closed") is True, result  # its log says what close() counted
    wait_exactly_once(collector, {"before": 5})


@pytest.mark.parametrize("exit_how", ["sys_exit", "sigkill"])
def test_a_process_that_leaves_while_the_api_is_down_leaves_its_events_to_the_flusher(
    app: AppRunner, collector: CollectorProcess, exit_how: str
) -> None:
    """The flusher belongs to no process: the application exits (at exit, close() waits
    ``shutdown_timeout`` and gives up) or is killed; the flusher retries on, and
    delivers once the API is back."""
    collector.set_faults(down=True)
    options = {"shutdown_timeout": 1.0, "max_retries": 30}
    expect_rc = -9 if exit_how == "sigkill" else 0
    results: list[AppResult] = []

    def run() -> None:
        results.append(app.run("basic", n=5, exit=exit_how, expect_rc=expect_rc, options=options))

    runner = threading.Thread(target=run)
    runner.start()
    try:
        poll_until(lambda: _scenarios_running() > 0, 60, "the application to start")
        poll_until(lambda: _scenarios_running() == 0, 120, "the application to leave")
        collector.clear_faults()
        wait_exactly_once(collector, {"owner": 5})
    finally:
        collector.clear_faults()
        runner.join(180)  # the run ends once the flusher, holding its stderr, has left
    assert results and results[0].returncode == expect_rc


def test_a_parent_that_tracked_nothing_waits_in_flush_for_its_childrens_events(
    app: AppRunner, collector: CollectorProcess, tmp_path: Path
) -> None:
    """A main process (a master) that tracks nothing still waits at flush() and exit
    for what its workers handed over, so a container does not stop under them."""
    collector.set_faults(down=True)
    go = tmp_path / "api-is-back"
    results: list[AppResult] = []
    runner = threading.Thread(
        target=lambda: results.append(app.run("idle_parent", n=5, go_file=str(go)))
    )
    runner.start()
    try:
        done = tmp_path / "first-flush-done"  # the scenario's cwd is tmp_path
        poll_until(done.exists, 60, "the first flush to time out")
        collector.clear_faults()
        go.touch()
    finally:
        collector.clear_faults()
        go.touch()
        runner.join(180)
    assert results[0].get("first") is False and results[0].get("second") is True
    wait_exactly_once(collector, {"child": 5})


def _scenarios_running() -> int:
    """Scenario processes that are children of this test process."""
    found = 0
    for child in psutil.Process().children():
        try:
            found += "support.scenarios" in child.cmdline()
        except psutil.Error:
            continue
    return found


def test_an_owner_that_execs_a_new_program_lets_its_flusher_go(
    app: AppRunner, collector: CollectorProcess
) -> None:
    """Same pid, new program (uWSGI reloads so): the flusher delivers and leaves."""
    result = app.run("exec_owner", n=30, options={"flush_interval": 60})
    assert result.get("flusher_left_after_exec") is True
    wait_exactly_once(collector, {"before-exec": 30})
