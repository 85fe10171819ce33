"""Fixtures of the host layer (each host's own servers are started by its test file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.collector import CollectorProcess
from support.pool_scenarios import PoolAppRunner


@pytest.fixture
def pools(tmp_path: Path, collector: CollectorProcess) -> PoolAppRunner:
    """Runs a pool scenario of ``support/pool_scenarios.py`` as an application process:
    ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` are the hosts."""
    return PoolAppRunner(collector.url, tmp_path)
