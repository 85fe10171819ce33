"""The unit layer: in-process and pure. A test here that starts a process fails.

``no_process_started`` (autouse) makes every way of starting a process
(``subprocess``, ``os.fork`` and the ``spawn`` family, so ``multiprocessing``
too) raise; an attempt also fails the test at teardown, even when the code
under test swallowed the exception (a client that could not start its
flusher, say). Tests that need a process belong to ``tests/process``.
"""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

STARTERS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system")


class ProcessStarted(AssertionError):
    """A unit test tried to start a process."""


@pytest.fixture(autouse=True)
def no_process_started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise ProcessStarted(f"the unit layer starts no process; {what} was called")

        return refused

    for name in STARTERS:
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"os.{name}"))
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("subprocess.Popen"))
    monkeypatch.setattr(_posixsubprocess, "fork_exec", refuse("_posixsubprocess.fork_exec"))
    yield attempts
    assert not attempts, f"the test tried to start processes: {attempts}"
