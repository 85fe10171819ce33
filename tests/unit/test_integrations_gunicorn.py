"""The gunicorn hooks' own rules, without gunicorn (``tests/host`` runs the real one)."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from trubrics_mp.integrations import gunicorn as hooks


def test_hook_logic_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks' own rules, with disabled clients (no flusher, no fork, no gunicorn)."""
    (tmp_path / "made_here.py").write_text(
        "from trubrics_mp import Trubrics\nother = 1\nclient = Trubrics('k', disabled=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(hooks._State, "client", None)
    monkeypatch.setattr(hooks._State, "target", None)
    server = types.SimpleNamespace(log=logging.getLogger("test"), cfg=None)
    with pytest.raises(RuntimeError, match="configure"):
        hooks.on_starting(server)  # a hook wired without configure() fails loudly
    with pytest.raises(TypeError):
        hooks.configure(42)  # type: ignore[arg-type]
    hooks.configure("made_here")  # no attribute: the first Trubrics global
    hooks.on_starting(server)
    client = hooks._State.client
    assert client is not None and client is sys.modules["made_here"].client
    hooks.worker_exit(server, types.SimpleNamespace(pid=-1))  # a gone worker, seen by the master
    assert not client.closed
    hooks.on_exit(server)
    assert client.closed
    with pytest.raises(TypeError, match="not a Trubrics"):
        hooks._resolve("made_here:other")
    monkeypatch.delitem(sys.modules, "made_here")
