"""The flusher of a host, as the host tests check it: one, outside the host, gone by itself.

The flusher belongs to no process of the host (see ``trubrics_mp._spawn``), so a
host test never looks for it among the host's children:
``support.processes.flushers()`` lists the flushers of the test's private
runtime directory, however they were started.

- ``child_subreaper()``: makes this process the child subreaper (``prctl``) of
  everything it starts, as a reaping init (systemd, ``docker run --init``) is in
  production. A flusher, orphaned as soon as its bootstrap process exits, then
  becomes a child of this process rather than of the machine's init, so a test
  can reap it and read how it exited. The host tests' autouse fixture ``reaper``
  (``tests/host/conftest.py``) holds it for every test.
- ``the_flusher(host_pid, reaper=None)``: the one flusher running for the test's
  pipeline, checked to be outside the host: neither it nor its parent is a process
  of the host's tree (its parent is the reaper: this process unless told), and it
  is in a session and a process group of its own, which no host process shares and
  nothing else alive is in. An application that is its own host (a pool scenario)
  calls it on itself, with its parent, the test process, as the reaper.
- ``reap(pid)``: the exit code of this process's exited child ``pid`` (reaping it);
  ``wait_reaped(pid)`` waits for it.
- ``wait_flushers_left(pids, killed=())``: once the host stopped, wait until no
  flusher of the test's pipeline runs, and reap each of ``pids``: each exited by
  itself with status 0 (those in ``killed``: by SIGKILL), and none is left a zombie.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Iterable, Iterator
from typing import Optional

import psutil

from support.processes import flushers, is_running, live_group_members, poll_until

PR_SET_CHILD_SUBREAPER = 36
DEADLINE_S = 60.0


@contextlib.contextmanager
def child_subreaper() -> Iterator[None]:
    """This process adopts the orphans among its descendants while the block runs."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield
    finally:
        _prctl(PR_SET_CHILD_SUBREAPER, 0)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}, {value}): {os.strerror(errno)}")


def host_tree(host_pid: int) -> list[int]:
    """The host's process and its running descendants (workers, pool processes...).

    Zombies are left out: a flusher's bootstrap process, which made the flusher's
    session and exited at once, may wait a moment to be reaped by the host process
    that started it.
    """
    root = psutil.Process(host_pid)
    tree = [host_pid, *(child.pid for child in root.children(recursive=True))]
    return [pid for pid in tree if is_running(pid)]


def _ids(pids: Iterable[int]) -> tuple[set[int], set[int]]:
    """The sessions and process groups of ``pids`` (those still running)."""
    sessions, groups = set(), set()
    for pid in pids:
        try:
            sessions.add(os.getsid(pid))
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass  # exited meanwhile
    return sessions, groups


def the_flusher(host_pid: int, reaper: Optional[int] = None) -> psutil.Process:
    """The one flusher running for this test's pipeline, checked to be outside the host."""
    reaper = os.getpid() if reaper is None else reaper
    running = flushers()
    assert len(running) == 1, f"flushers running for one host: {[p.pid for p in running]}"
    flusher = running[0]
    tree = host_tree(host_pid)
    assert flusher.pid not in tree, f"the flusher {flusher.pid} is a process of the host"
    assert flusher.ppid() == reaper, (
        f"the flusher's parent is {flusher.ppid()}, not the reaper above the host "
        f"({reaper}); the host's processes are {tree}"
    )
    session, group = os.getsid(flusher.pid), os.getpgid(flusher.pid)
    host_sessions, host_groups = _ids(tree)
    assert session == group, "the flusher's process group is not its own session's"
    assert session not in host_sessions, f"the flusher is in a session of the host: {session}"
    assert group not in host_groups, f"the flusher is in a process group of the host: {group}"
    assert live_group_members(group) == [flusher.pid], "the flusher's group is not its own"
    return flusher


def reap(pid: int) -> Optional[int]:
    """The exit code of this process's exited child ``pid`` (reaped now), None while it runs.

    Raises ``ChildProcessError`` when ``pid`` is not (or no longer) a child of this process.
    """
    waited, status = os.waitpid(pid, os.WNOHANG)
    return None if waited == 0 else os.waitstatus_to_exitcode(status)


def wait_reaped(pid: int, deadline_s: float = DEADLINE_S) -> int:
    """Wait until this process's child ``pid`` has exited; reap it and return its exit code."""
    codes: list[Optional[int]] = []

    def exited() -> bool:
        codes.append(reap(pid))
        return codes[-1] is not None

    poll_until(exited, deadline_s, f"process {pid} to exit")
    code = codes[-1]
    assert code is not None
    return code


def wait_flushers_left(
    pids: Iterable[int], killed: Iterable[int] = (), deadline_s: float = DEADLINE_S
) -> None:
    """Wait until no flusher runs, each of ``pids`` exited by itself and was reaped here."""
    waiting, codes = set(pids), dict[int, int]()

    def all_left() -> bool:
        for pid in waiting - set(codes):
            code = reap(pid)
            if code is not None:
                codes[pid] = code
        return set(codes) == waiting and not flushers()

    def state() -> str:
        running = [p.pid for p in flushers()]
        return f"the flushers to leave (running: {running}; exit codes of {waiting}: {codes})"

    poll_until(all_left, deadline_s, state, interval=0.05)
    expected = {pid: -signal.SIGKILL if pid in set(killed) else 0 for pid in waiting}
    assert codes == expected, f"flusher exit codes {codes}, expected {expected}"
