"""Fixtures shared by the whole suite.

- ``no_leaked_processes`` (autouse): after every test, waits until no process
  started during it is left (found through the ``PYTEST_CURRENT_TEST``
  variable every descendant inherits, even once reparented to init, plus this
  process's own children); anything still alive at the deadline is killed and
  the test fails.
- ``collector``: the real local collector (fault-injecting variant) on a free
  port, with its database in the test's private ``tmp_path``.
- ``app``: runs a scenario of ``support/scenarios.py`` as a separate Python
  process (the "application"), so the pytest process itself never forks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.collector import CollectorProcess

from trubrics_mp.collector import EventStore

LEAK_DEADLINE_S = 60.0


def _nodeid_of(proc: psutil.Process) -> str:
    try:
        value = proc.environ().get("PYTEST_CURRENT_TEST", "")
    except (psutil.Error, OSError):
        return ""
    return value.rsplit(" ", 1)[0]


def _leftovers(nodeid: str) -> list[psutil.Process]:
    me = os.getpid()
    found = {p.pid: p for p in psutil.Process(me).children(recursive=True)}
    for proc in psutil.process_iter():
        if proc.pid != me and proc.pid not in found and _nodeid_of(proc) == nodeid:
            found[proc.pid] = proc
    return list(found.values())


def _describe(procs: list[psutil.Process]) -> str:
    lines = []
    for proc in procs:
        try:
            lines.append(f"pid {proc.pid} {proc.status()}: {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"pid {proc.pid} (gone)")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    nodeid = request.node.nodeid
    deadline = time.monotonic() + LEAK_DEADLINE_S
    left = _leftovers(nodeid)
    while left and time.monotonic() < deadline:
        for proc in left:  # reap our own zombies
            if proc.pid in {c.pid for c in psutil.Process().children()}:
                try:
                    os.waitpid(proc.pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        time.sleep(0.1)
        left = _leftovers(nodeid)
    if left:
        description = _describe(left)
        for proc in left:
            try:
                proc.kill()
            except psutil.Error:
                pass
        pytest.fail(f"processes left behind by the test:\n{description}")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    with CollectorProcess(tmp_path) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """An empty collector store (SQLite) in the test's ``tmp_path``, used in this process."""
    with EventStore(tmp_path / "events.sqlite3") as event_store:
        yield event_store
