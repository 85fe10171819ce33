"""Why the shared queue is not a stock ``multiprocessing.Queue``: each failure, both ways.

Every scenario runs one situation twice: with a stock ``multiprocessing.Queue``
(the failure documented in ``multiprocess-pitfalls.md``) and with trubrics-mp.
It prints what arrived on each side. Each situation is made deterministic:
the stock queue's failure does not depend on timing.

Run as ``python -m support.pitfalls NAME JSON_ARGS`` with ``tests/`` on the path.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import sys
import time
from typing import Any, Callable

from support.scenarios import emit, flusher_pid, make_client, track_many

Args = dict[str, Any]
ITEM = "x" * 700  # 100 items = 70 kB: more than a pipe (64 kB) holds
CTX = multiprocessing.get_context("fork")


def _drain(stock: Any, timeout: float) -> int:
    got = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stock.get(timeout=0.2)
            got += 1
        except queue.Empty:
            if got:
                break
    return got


def _fork(child: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            child()
        finally:
            os._exit(0)
    return pid


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def os_exit_after_put(args: Args) -> None:
    """A producer leaves through ``os._exit`` right after handing over 100 events."""
    stock: Any = CTX.Queue()

    def stock_child() -> None:
        for seq in range(100):
            stock.put({"seq": seq, "blob": ITEM})

    _wait(_fork(stock_child))  # nobody reads while it runs, as under load
    emit(stock_received=_drain(stock, 5.0))

    client = make_client(args)
    flusher = flusher_pid(client) or 0
    os.kill(flusher, signal.SIGSTOP)  # nobody reads while it runs, here either

    def our_child() -> None:
        for seq in range(100):
            client.track(
                user_id="u", event="e", properties={"src": "os_exit", "seq": seq, "blob": ITEM}
            )
        emit(ours_buffered_in_process=client.stats(flusher=False).buffered)

    _wait(_fork(our_child))
    os.kill(flusher, signal.SIGCONT)
    emit(ours_flushed=client.close(timeout=60))


def fork_after_use(args: Args) -> None:
    """A queue used in the parent, then a raw ``os.fork()`` (gunicorn, uWSGI)."""
    stock: Any = CTX.Queue()
    stock.put("warm-up")
    stock.get()  # the parent's feeder thread now exists; the child will not have it

    def stock_child() -> None:
        for seq in range(50):
            stock.put(seq)
        time.sleep(1.0)  # give a feeder every chance: there is none

    _wait(_fork(stock_child))
    emit(stock_received=_drain(stock, 3.0))

    client = make_client(args)
    track_many(client, "parent", 1)
    client.flush(timeout=60)
    _wait(_fork(lambda: track_many(client, "forked", 50)))
    emit(ours_flushed=client.close(timeout=60))


def writer_killed_holding_the_lock(args: Args) -> None:
    """A producer SIGKILLed mid-write, then another producer tries."""
    stock: Any = CTX.Queue()

    def doomed() -> None:
        stock._wlock.acquire()  # what a writer holds while its bytes go out
        os.kill(os.getpid(), signal.SIGKILL)

    def survivor() -> None:
        for seq in range(10):
            stock.put(seq)
        time.sleep(2.0)  # give its feeder thread every chance to get the lock

    _wait(_fork(doomed))
    _wait(_fork(survivor))
    emit(stock_received=_drain(stock, 3.0))

    client = make_client(args)

    def our_doomed() -> None:
        blob = "y" * 100_000  # several pages: killed in the middle of handing it over
        for seq in range(1_000_000):
            client.track(
                user_id="u", event="e", properties={"src": "doomed", "seq": seq, "blob": blob}
            )

    pid = _fork(our_doomed)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    _wait(pid)
    _wait(_fork(lambda: track_many(client, "after", 10)))
    emit(ours_flushed=client.close(timeout=60))


def _stand_in_flusher(ready: Any) -> None:
    ready.put("up")
    time.sleep(600)


def child_exit_kills_daemons(args: Args) -> None:
    """A forked child exits normally: does the parent's daemonic helper survive?"""
    ready: Any = CTX.Queue()
    helper = CTX.Process(target=_stand_in_flusher, args=(ready,), daemon=True)
    helper.start()
    ready.get(timeout=60)
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # normal exit: multiprocessing's atexit handler runs here
    _wait(pid)
    helper.join(5.0)
    emit(stock_helper_alive=helper.is_alive(), stock_helper_exitcode=helper.exitcode)
    if helper.is_alive():
        helper.kill()
        helper.join()

    client = make_client(args)
    before = flusher_pid(client)
    pid = os.fork()
    if pid == 0:
        track_many(client, "child", 5)
        sys.exit(0)
    _wait(pid)
    track_many(client, "parent", 5)
    emit(ours_flusher_kept=client.stats().flusher_pid == before)
    emit(ours_flushed=client.close(timeout=60))


SCENARIOS = {
    f.__name__: f
    for f in (
        os_exit_after_put,
        fork_after_use,
        writer_killed_holding_the_lock,
        child_exit_kills_daemons,
    )
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
