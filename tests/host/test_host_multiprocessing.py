"""``multiprocessing.Pool`` and ``ProcessPoolExecutor`` as hosts, under every start method.

Complements ``test_pipeline.py`` (which covers ``Pool`` with ``initializer`` and
``maxtasksperchild`` left through ``close()``/``join()``): here pools are left
abruptly (``terminate()``, ``shutdown(wait=False, cancel_futures=True)``), and a
fork pool is made after the parent already used the client. The applications
run as separate processes (``support/pool_scenarios.py``); the autouse fixture
of ``tests/conftest.py`` checks that none of their processes (workers, fork server,
resource tracker, flusher) outlives the test. While the application runs, one
flusher serves it, outside it (in a session and process group of its own, no
child of the application); once the application has left, the flusher leaves by
itself, with status 0, and is reaped (no zombie).

Events of tasks that were still running when the pool was left may or may not
have been tracked: they must arrive *at most* once. Events of completed tasks
(the parent saw their result) and of the parent must arrive exactly once.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
from support.checks import counts, expected_keys, wait_delivered
from support.collector import CollectorProcess
from support.host_flushers import wait_flushers_left
from support.pool_scenarios import PoolAppRunner

from trubrics_mp._config import MIB

START_METHODS = ["fork", "spawn", "forkserver"]
Keys = set[tuple[str, int]]


def task_keys(src: str, tasks: list[int], per_task: int) -> Keys:
    return {(src, t * per_task + k) for t in tasks for k in range(per_task)}


def check_one_flusher(result: Any) -> dict[str, Any]:
    """One flusher, outside the application, never restarted, that received events from
    every worker; it left by itself once the application was gone."""
    stats: dict[str, Any] = result.get("stats")
    assert stats["flusher_restarts"] == 0
    assert stats["flusher_pid"] is not None
    assert stats["flusher_pid"] == result.get("flusher_pid") == result.get("detached_flusher")
    senders = {int(pid) for pid in stats["received_by_pid"]}
    assert set(result.get("worker_pids")) <= senders
    wait_flushers_left({stats["flusher_pid"]})
    return stats


def measure(label: str, result: Any, collector: CollectorProcess, required: Keys) -> None:
    """Print what the report's table needs (run with ``-s`` to see it); asserts nothing."""
    stop_s = time.monotonic() - result.get("leaving_at") if "leaving_at" in result.stdout else 0
    events = collector.events()
    print(
        f"MEASURE {label} py{sys.version_info[0]}.{sys.version_info[1]}: "
        f"required={len(required)} delivered={len(events)} "
        f"distinct={len(counts(events))} requests={len(collector.batches())} "
        f"stop_s={stop_s:.2f}"
    )


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_left_through_terminate_mid_work(
    pools: PoolAppRunner, collector: CollectorProcess, method: str
) -> None:
    """``terminate()`` SIGTERMs busy workers: what they already tracked still arrives once."""
    per_task, tasks = 3, 60
    result = pools.run(
        "pool_terminate",
        method=method,
        processes=2,
        maxtasksperchild=8,
        tasks=tasks,
        per_task=per_task,
        pause_s=0.02,
        stop_after=20,
        n_after=10,
    )
    assert result.get("closed") is True
    done = result.get("done")
    assert len(done) == 20
    required = task_keys("pool", done, per_task) | expected_keys({"after": 10})
    optional = task_keys("pool", list(range(tasks)), per_task)
    wait_delivered(collector, required, optional)
    stats = check_one_flusher(result)
    assert stats["failed_batches"] == 0
    measure(f"pool-terminate-{method}", result, collector, required)


@pytest.mark.parametrize("method", START_METHODS)
def test_executors_with_replaced_workers_then_left_without_waiting(
    pools: PoolAppRunner, collector: CollectorProcess, method: str
) -> None:
    """Two executors on one client and one flusher.

    The first recycles its workers (``max_tasks_per_child=1``, where it exists:
    3.11+, not with ``fork``), each fresh worker getting the client through
    ``initializer``; every event arrives once. The second is left through
    ``shutdown(wait=False, cancel_futures=True)`` and the app returns: atexit
    closes the client after the interpreter joined the workers.
    """
    per_task, tasks, full_tasks = 3, 16, 6
    result = pools.run(
        "executor_cancel",
        method=method,
        processes=2,
        max_tasks_per_child=1,
        full_tasks=full_tasks,
        tasks=tasks,
        per_task=per_task,
        pause_s=0.05,
        stop_after=6,
        n_after=10,
    )
    replaced = method != "fork" and sys.version_info >= (3, 11)
    assert result.get("executor_options") == ({"max_tasks_per_child": 1} if replaced else {})
    if replaced:
        assert len(result.get("full_pids")) == full_tasks  # one fresh worker per task
    done = result.get("done")
    assert len(done) == 6
    assert result.get("cancelled") > 0  # some futures never ran
    required = (
        task_keys("exec", done, per_task)
        | task_keys("exec-full", list(range(full_tasks)), per_task)
        | expected_keys({"after": 10})
    )
    optional = task_keys("exec", list(range(tasks)), per_task)
    wait_delivered(collector, required, optional)
    stats = check_one_flusher(result)
    assert set(result.get("full_pids")) <= {int(pid) for pid in stats["received_by_pid"]}
    measure(f"executor-cancel-{method}", result, collector, required)


def test_fork_pool_made_after_the_parent_used_the_client(
    pools: PoolAppRunner, collector: CollectorProcess
) -> None:
    """Workers forked while the parent still buffers events never send that buffer.

    The parent tracks (flusher stopped) until its socket is full and 200 events
    wait in its buffer; ``maxtasksperchild`` makes the pool fork replacements
    from its handler thread later on, still with that buffer in memory. The
    workers use the client they inherited through memory.
    """
    tasks, per_task = 30, 2
    result = pools.run(
        "fork_pool_after_use",
        processes=2,
        maxtasksperchild=5,
        tasks=tasks,
        per_task=per_task,
        buffered=200,
        n_after=10,
        options={"flush_at": 100, "max_queue_bytes": 256 * MIB, "process_buffer_bytes": 100_000},
    )
    assert result.get("parent_buffered") == 200  # the fork really copied a non-empty buffer
    assert result.get("closed") is True
    assert len(result.get("worker_pids")) >= tasks // 5  # replacements were forked
    n_parent = result.get("n_parent")
    expected = {"parent": n_parent, "pool": tasks * per_task, "parent-after": 10}
    wait_delivered(collector, expected_keys(expected), set())
    stats = check_one_flusher(result)
    assert sum(stats["received_by_pid"].values()) == sum(expected.values())
    assert stats["dropped"] == {}
    measure("fork-pool-after-use", result, collector, expected_keys(expected))
