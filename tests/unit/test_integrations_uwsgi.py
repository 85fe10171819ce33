"""The uWSGI integration's option checks, without uWSGI (``tests/host`` runs the real one)."""

from __future__ import annotations

from typing import Any

import pytest

from trubrics_mp import Trubrics
from trubrics_mp.integrations import uwsgi as trubrics_uwsgi


class _FakeUwsgi:
    """Just what :func:`check_options` reads from the ``uwsgi`` module."""

    def __init__(self, opt: dict[str, Any], master: int, numproc: int, version: bytes) -> None:
        self.opt, self.numproc, self.version = opt, numproc, version
        self._master = master

    def masterpid(self) -> int:
        return self._master


@pytest.mark.parametrize(
    "opt, master, numproc, version, expected",
    [
        ({"master": True, "die-on-term": True}, 10, 4, b"2.0.31", set()),
        ({"master": b"true", "die-on-term": b"true"}, 10, 4, b"2.0.31", set()),
        ({"master": True}, 10, 4, b"2.1.0", set()),
        ({"master": True, "exit-on-reload": True}, 10, 4, b"2.0.20", set()),
        ({"master": True}, 10, 4, b"2.0.31", {"sigterm-reloads"}),
        ({"die-on-term": b"false"}, 10, 1, b"2.0.31", {"sigterm-reloads"}),
        ({"die-on-term": True}, 0, 4, b"2.0.31", set()),  # no master: no owner, no warning
        ({"die-on-term": True}, 0, 1, b"2.0.31", set()),
        ({"die-on-term": True, "skip-atexit": True}, 10, 2, b"2.0.31", {"skip-atexit"}),
    ],
)
def test_check_options_rules(
    opt: dict[str, Any], master: int, numproc: int, version: bytes, expected: set[str]
) -> None:
    found = trubrics_uwsgi.check_options(_FakeUwsgi(opt, master, numproc, version))
    assert set(found) == expected


def test_outside_uwsgi_register_changes_nothing() -> None:
    client = Trubrics("key", "http://127.0.0.1:9", disabled=True)
    assert trubrics_uwsgi.register(client) is client
    assert trubrics_uwsgi.check_options() == {}
