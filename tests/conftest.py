"""Fixtures shared by the whole suite (each layer's own are in its ``conftest.py``).

- ``private_pipeline`` (autouse): every test gets a runtime directory of its
  own (``TRUBRICS_MP_RUNTIME_DIR``, inherited by every process it starts), so
  tests running in parallel never share a flusher, and a short linger
  (``TRUBRICS_MP_LINGER``, 0.3 s) so flushers leave soon after the test's
  processes.
- ``no_leaked_processes`` (autouse): after every test, waits until no process
  started during it is left (found through the ``PYTEST_CURRENT_TEST``
  variable every descendant inherits, even once reparented to init, plus this
  process's own children; zombies are not running) and carrying this suite
  run's token (``TRUBRICS_MP_TEST_RUN``, so a concurrent run of the same test
  elsewhere on the machine is left alone); anything still running at the
  deadline is killed and the test fails.
- ``no_internal_errors`` (autouse, ``support/internal_errors.py``): fails a
  test during which the library logged an internal error, unless it is marked
  ``internal_errors_allowed``.
- ``collector``: the real local collector (fault-injecting variant) on a free
  port, with its database in the test's private ``tmp_path``.
- ``store``: an empty collector store, used in this process.
- the ``pipeline_per_machine`` marker labels the host tests of the promise that
  every process of a machine shares one flusher (``support/pipelines.py``);
  ``make test-pipeline`` runs only them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.collector import CollectorProcess
from support.internal_errors import no_internal_errors
from support.processes import RUN_ENV, stop_leftovers

from trubrics_mp.collector import EventStore

__all__ = ["collector", "no_internal_errors", "no_leaked_processes", "private_pipeline", "store"]

LEAK_DEADLINE_S = 60.0
TEST_LINGER_S = "0.3"


def pytest_configure(config: pytest.Config) -> None:
    """One token per suite run, inherited by every process a test starts (xdist
    workers inherit the controller's)."""
    os.environ.setdefault(RUN_ENV, uuid.uuid4().hex)


@pytest.fixture(autouse=True)
def private_pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private runtime directory (socket paths must stay under 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="tmrt-"))
    monkeypatch.setenv("TRUBRICS_MP_RUNTIME_DIR", str(directory))
    monkeypatch.setenv("TRUBRICS_MP_LINGER", TEST_LINGER_S)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leaked_processes(request: pytest.FixtureRequest, private_pipeline: Path) -> Iterator[None]:
    yield
    killed = stop_leftovers(request.node.nodeid, LEAK_DEADLINE_S)
    if killed:
        pytest.fail(f"processes left behind by the test (now killed):\n{killed}")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    with CollectorProcess(tmp_path) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """An empty collector store (SQLite) in the test's ``tmp_path``, used in this process."""
    with EventStore(tmp_path / "events.sqlite3") as event_store:
        yield event_store
