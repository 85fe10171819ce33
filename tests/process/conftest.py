"""Fixtures of the process layer: applications run as separate processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.collector import CollectorProcess
from support.scenarios import AppRunner


@pytest.fixture
def app(tmp_path: Path, collector: CollectorProcess) -> AppRunner:
    """Runs a scenario of ``support/scenarios.py`` as a separate Python process (the
    "application"), so the pytest process itself never forks."""
    return AppRunner(collector.url, tmp_path)
