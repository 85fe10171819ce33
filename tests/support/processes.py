"""Processes in tests: the server helper, waiting, liveness, and the leak check.

The server helper, :func:`poll_until` and :func:`is_running` are those of
``trubrics_mp._servers`` (the demo runs its services with them too); tests
import them from here.

- ``ServerProcess(argv, ready=REGEX, cwd=..., env=...)``: a server in a session
  of its own, its merged output in ``lines``; ``start()`` waits for the
  ``ready`` line (``ready_match``); ``wait_for(regex, count)``,
  ``matches(regex)``, ``send_signal``, ``signal_group``, ``stop(deadline_s,
  sig=...)`` (SIGKILLs the group past the deadline and sets ``killed``),
  ``kill()`` (clean-up path).
- ``poll_until(condition, timeout, what)``: the value of the first true call;
  ``WaitTimeout`` (a ``TimeoutError``) naming ``what`` past the timeout.
- ``is_running(pid)``: a zombie is not running; ``live_group_members(pgid)``: the
  running processes of a process group.
- ``flushers()``: the running flushers of this test's runtime directory.
- :func:`leftovers` and :func:`stop_leftovers`: what the suite's leak check
  (``tests/conftest.py``) looks for after every test.
"""

from __future__ import annotations

import os
from typing import Optional

import psutil

from trubrics_mp._servers import (
    READER_THREAD_PREFIX,
    ServerError,
    ServerProcess,
    WaitTimeout,
    is_running,
    live_group_members,
    poll_until,
)

LEAK_POLL_S = 0.1  # each look lists every process of the machine

__all__ = [
    "READER_THREAD_PREFIX",
    "RUN_ENV",
    "flushers",
    "ServerError",
    "ServerProcess",
    "WaitTimeout",
    "is_running",
    "leftovers",
    "live_group_members",
    "poll_until",
    "stop_leftovers",
]


RUN_ENV = "TRUBRICS_MP_TEST_RUN"  # one token per suite run, set by tests/conftest.py


def _test_of(proc: psutil.Process) -> tuple[str, str]:
    """The test (node id) and suite run (token) whose environment ``proc`` inherited."""
    try:
        environ = proc.environ()
    except (psutil.Error, OSError):
        return "", ""
    return environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0], environ.get(RUN_ENV, "")


def _reap_zombie_children() -> None:
    """Collect the exit status of this process's exited children (so no zombie piles up)."""
    for child in psutil.Process().children():
        if not is_running(child.pid):
            try:
                os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pass


def leftovers(nodeid: str) -> list[psutil.Process]:
    """Running processes a test left: this process's descendants, and every process whose
    ``PYTEST_CURRENT_TEST`` (inherited by all its descendants, reparented or not) names
    ``nodeid`` and whose run token is this suite run's: another run of the same test on
    the machine (another checkout, CI) is not ours to wait for or kill."""
    _reap_zombie_children()
    me = os.getpid()
    ours = (nodeid, os.environ.get(RUN_ENV, ""))
    found = {p.pid: p for p in psutil.Process(me).children(recursive=True)}
    for proc in psutil.process_iter():
        if proc.pid != me and proc.pid not in found and _test_of(proc) == ours:
            found[proc.pid] = proc
    return [proc for proc in found.values() if is_running(proc.pid)]


def flushers(runtime_dir: Optional[str] = None) -> list[psutil.Process]:
    """Running flusher processes whose pipeline directory is ``runtime_dir`` (default:
    this test's, ``TRUBRICS_MP_RUNTIME_DIR``), however they were started."""
    wanted = runtime_dir or os.environ["TRUBRICS_MP_RUNTIME_DIR"]
    found = []
    for proc in psutil.process_iter():
        try:
            if "trubrics-mp-flusher" not in proc.cmdline()[-2:]:
                continue
            if proc.name() != "trubrics-flush":
                continue  # its bootstrap (same command line), about to fork it and exit
            if proc.environ().get("TRUBRICS_MP_RUNTIME_DIR") == wanted:
                found.append(proc)
        except (psutil.Error, OSError):
            continue  # gone, a zombie, or not ours to read
    return [proc for proc in found if is_running(proc.pid)]


def _describe(procs: list[psutil.Process]) -> str:
    lines = []
    for proc in procs:
        try:
            lines.append(f"pid {proc.pid} {proc.status()}: {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"pid {proc.pid} (gone)")
    return "\n".join(lines)


def stop_leftovers(nodeid: str, deadline_s: float) -> str:
    """Wait up to ``deadline_s`` for the test's processes to exit; SIGKILL the rest.

    Returns a description of what had to be killed ("" when nothing was left).
    """
    try:
        poll_until(lambda: not leftovers(nodeid), deadline_s, "exits", interval=LEAK_POLL_S)
        return ""
    except WaitTimeout:
        left = leftovers(nodeid)
    description = _describe(left)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return description
