"""How the flusher's interpreter is found."""

from __future__ import annotations

import pytest

from trubrics_mp._spawn import python_executable


def test_the_flusher_finds_a_python_even_when_sys_executable_is_uwsgi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.executable", "/usr/local/bin/uwsgi")
    found = python_executable()
    assert "python" in found.rsplit("/", 1)[-1]
