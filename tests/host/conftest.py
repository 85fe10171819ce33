"""Fixtures of the host layer (each host's own servers are started by its test file).

- ``reaper`` (autouse): this process is the child subreaper of every host a test
  starts (``support.host_flushers.child_subreaper``), as a reaping init is in
  production: the host's flusher, a child of no host process, becomes this
  process's child once its bootstrap exits, and the test reaps it.
- ``pools``: runs a pool scenario as an application process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.collector import CollectorProcess
from support.host_flushers import child_subreaper
from support.pool_scenarios import PoolAppRunner


@pytest.fixture(autouse=True)
def reaper() -> Iterator[None]:
    with child_subreaper():
        yield


@pytest.fixture
def pools(tmp_path: Path, collector: CollectorProcess) -> PoolAppRunner:
    """Runs a pool scenario of ``support/pool_scenarios.py`` as an application process:
    ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` are the hosts."""
    return PoolAppRunner(collector.url, tmp_path)
