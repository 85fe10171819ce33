"""Process pools as applications: ``multiprocessing.Pool`` and ``ProcessPoolExecutor``.

``python -m support.pool_scenarios NAME JSON_ARGS`` (with ``tests/`` on the path)
runs one scenario, like ``support.scenarios`` (whose helpers it reuses), and
reports with JSON lines on stdout. Every pool task tracks ``per_task`` events
labelled ``{"src": <label>, "seq": task * per_task + k}`` and returns its pid, so
a test knows which events a *completed* task sent and which worker sent them.

Before returning, each scenario waits (60 s at most, else it fails) until the
flusher's ``received_by_pid`` covers every worker pid that completed a task: a
worker's messages may still sit unread in its socket when the parent asks for stats.
Then it checks that the flusher is the only one of the pipeline, outside the
application (``support.host_flushers.the_flusher``, with the test process as the
reaper), and reports its pid as ``detached_flusher``.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import signal
import sys
import time
from typing import Any, Callable, Optional

from support.host_flushers import the_flusher
from support.processes import poll_until
from support.scenarios import AppRunner, Args, emit, flusher_pid, make_client, track_many
from trubrics_mp import Stats, Trubrics

STATS_DEADLINE_S = 60.0

# The client of a pool worker: set by the initializer (any start method), or
# inherited from the parent's memory when a fork pool is made after it was set.
_CLIENT: Optional[Trubrics] = None


def _init_worker(client: Trubrics) -> None:
    global _CLIENT
    _CLIENT = client


def _task(src: str, task: int, per_task: int, pause_s: float) -> tuple[int, int]:
    """Track this task's events; return (task, pid)."""
    assert _CLIENT is not None, "the worker has no client"
    track_many(_CLIENT, src, per_task, start=task * per_task)
    if pause_s:
        time.sleep(pause_s)
    return task, os.getpid()


def _task_star(job: tuple[str, int, int, float]) -> tuple[int, int]:
    return _task(*job)


def report(client: Trubrics, done: list[tuple[int, int]], received: int = 0) -> None:
    """Emit the completed tasks, then stats once the flusher heard every worker.

    With ``received``, also wait until the flusher has read that many events.
    """
    pids = sorted({pid for _, pid in done})
    emit(done=sorted(task for task, _ in done), worker_pids=pids)
    wait_stats(client, pids, received)


def wait_stats(client: Trubrics, pids: list[int], received: int = 0) -> None:
    """Flush, then emit stats once they list every pid of ``pids`` (60 s at most)."""
    client.flush(timeout=60)
    seen: list[Stats] = []

    def heard_all() -> bool:
        seen[:] = [client.stats()]
        by_pid = seen[0].received_by_pid
        return set(pids) <= set(by_pid) and sum(by_pid.values()) >= received

    poll_until(heard_all, STATS_DEADLINE_S, lambda: f"{received} events from {pids}: {seen}")
    emit(stats=seen[0].as_dict(), flusher_pid=flusher_pid(client))
    emit(detached_flusher=the_flusher(os.getpid(), reaper=os.getppid()).pid)


# -- scenarios ----------------------------------------------------------------------
def pool_terminate(args: Args) -> None:
    """A ``Pool`` (client through ``initializer``) left through ``terminate()`` mid-work."""
    client = make_client(args)
    context = multiprocessing.get_context(args["method"])
    jobs = [("pool", t, args["per_task"], args["pause_s"]) for t in range(args["tasks"])]
    workers = context.Pool(
        args["processes"],
        initializer=_init_worker,
        initargs=(client,),
        maxtasksperchild=args.get("maxtasksperchild"),
    )
    done = []
    for result in workers.imap_unordered(_task_star, jobs):
        done.append(result)
        if len(done) == args["stop_after"]:
            break
    emit(leaving_at=time.monotonic())
    workers.terminate()  # SIGTERM to every worker, busy or not
    workers.join()
    track_many(client, "after", args["n_after"])
    report(client, done)
    emit(closed=client.close(timeout=60))


def fill_until_buffered(client: Trubrics, src: str, extra: int, limit: int = 200_000) -> int:
    """Track events until the socket is full and ``extra`` wait in the buffer; the count.

    How many messages the socket holds depends on ``net.core.wmem_max``.
    """
    seq = 0
    while seq < limit and client.stats(flusher=False).buffered < extra:
        client.track(user_id=f"user-{src}", event="Sign up", properties={"src": src, "seq": seq})
        seq += 1
    return seq


def fork_pool_after_use(args: Args) -> None:
    """A fork ``Pool`` made after the parent used the client, with events still buffered.

    The flusher is stopped while the parent tracks until its socket is full, so
    ``buffered`` events wait in its per-process buffer when the workers are
    forked: a child that sent its inherited copy would duplicate them. The
    workers use the client they inherited through memory (no initializer).
    """
    global _CLIENT
    client = _CLIENT = make_client(args)
    flusher = flusher_pid(client) or 0
    os.kill(flusher, signal.SIGSTOP)
    n_parent = fill_until_buffered(client, "parent", args["buffered"])
    emit(n_parent=n_parent, parent_buffered=client.stats(flusher=False).buffered)
    os.kill(flusher, signal.SIGCONT)
    context = multiprocessing.get_context("fork")
    jobs = [("pool", t, args["per_task"], 0.0) for t in range(args["tasks"])]
    with context.Pool(args["processes"], maxtasksperchild=args.get("maxtasksperchild")) as pool:
        done = pool.map(_task_star, jobs, chunksize=1)
        emit(leaving_at=time.monotonic())
        pool.close()
        pool.join()
    track_many(client, "parent-after", args["n_after"])
    report(client, done, received=n_parent + len(jobs) * args["per_task"] + args["n_after"])
    emit(closed=client.close(timeout=60))


def executor_options(method: str, max_tasks_per_child: Optional[int]) -> dict[str, Any]:
    """``max_tasks_per_child`` where this Python and start method allow it.

    It exists from Python 3.11 and refuses the ``fork`` start method. Caveat:
    with a value above 1 and a backlog of submitted tasks, 3.11 to 3.13.x can
    stop replacing exited workers and hang (CPython gh-115634); 1 is immune,
    because only non-final completions leave the stale "idle worker" tokens.
    """
    if max_tasks_per_child is None or method == "fork" or sys.version_info < (3, 11):
        return {}
    return {"max_tasks_per_child": max_tasks_per_child}


def _executor(args: Args, **options: Any) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        args["processes"],
        mp_context=multiprocessing.get_context(args["method"]),
        initializer=_init_worker,
        initargs=(args["client"],),
        **options,
    )


def executor_replaced_workers(args: Args) -> list[tuple[int, int]]:
    """All tasks on an executor with ``max_tasks_per_child`` (where allowed), then a join."""
    options = executor_options(args["method"], args.get("max_tasks_per_child"))
    emit(executor_options=options)
    with _executor(args, **options) as executor:
        jobs = [("exec-full", t, args["per_task"], 0.0) for t in range(args["full_tasks"])]
        return [executor.submit(_task, *job).result(timeout=120) for job in jobs]


def executor_cancel(args: Args) -> None:
    """Two executors on one client; the second left through ``shutdown(wait=False, ...)``.

    The first runs every task with ``max_tasks_per_child`` (fresh workers get the
    client through ``initializer``) and is joined. The second is left through
    ``shutdown(wait=False, cancel_futures=True)`` after ``stop_after`` results;
    then the scenario returns: the interpreter joins that executor's workers
    (``threading`` exit hooks run before ``atexit``) and only then does the
    client's ``atexit`` handler close the pipeline. The two features are not
    combined on one executor: before CPython 3.14 a worker leaving at its
    ``max_tasks_per_child`` limit after ``shutdown(wait=False)`` crashes the
    executor's manager thread and the interpreter hangs at exit (gh-119592).
    """
    client = args["client"] = make_client(args)
    done_full = executor_replaced_workers(args)
    executor = _executor(args)
    futures = [
        executor.submit(_task, "exec", t, args["per_task"], args["pause_s"])
        for t in range(args["tasks"])
    ]
    done = []
    for future in concurrent.futures.as_completed(futures, timeout=120):
        done.append(future.result())
        if len(done) == args["stop_after"]:
            break
    emit(leaving_at=time.monotonic())
    executor.shutdown(wait=False, cancel_futures=True)
    track_many(client, "after", args["n_after"])
    emit(full_pids=sorted({pid for _, pid in done_full}))
    emit(done=sorted(task for task, _ in done), worker_pids=sorted({pid for _, pid in done}))
    wait_stats(client, sorted({pid for _, pid in done_full + done}))
    # The executor's manager thread cancels the pending futures: wait for it.
    poll_until(lambda: any(f.cancelled() for f in futures), STATS_DEADLINE_S, "cancellations")
    emit(cancelled=sum(f.cancelled() for f in futures))


SCENARIOS: dict[str, Callable[[Args], None]] = {
    f.__name__: f for f in (pool_terminate, fork_pool_after_use, executor_cancel)
}


class PoolAppRunner(AppRunner):
    """``AppRunner`` for the scenarios of this module."""

    def command(self, name: str, python_flags: tuple[str, ...] = (), **args: Any) -> list[str]:
        argv = super().command(name, python_flags, **args)
        argv[argv.index("support.scenarios")] = "support.pool_scenarios"
        return argv


def main() -> None:
    name, payload = sys.argv[1], json.loads(sys.argv[2])
    SCENARIOS[name](payload)


if __name__ == "__main__":
    main()
