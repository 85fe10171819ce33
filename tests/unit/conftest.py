"""The unit layer: in-process and pure. A test here that starts a process fails.

``no_process_started`` (autouse) makes every way of starting a process
(``subprocess``, ``os.fork`` and the ``spawn`` family, so ``multiprocessing``
too) raise; an attempt also fails the test at teardown, even when the code
under test swallowed the exception (a client that could not start its
flusher, say). Tests that need a process belong to ``tests/process``.
"""

from __future__ import annotations

import _posixsubprocess
import functools
import os
import subprocess
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from support.flusher_harness import Harness, harnesses

from trubrics_mp import _serialize
from trubrics_mp._serialize import JSON_ENV, JsonEncoder, choose_encoder

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


ORJSON_ABSENT = "orjson (the fast extra) is not installed: only the standard json encoder is tested"


@pytest.fixture(params=["json", "orjson"])
def json_encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> JsonEncoder:
    """Each test of a module using it twice: with the standard encoder, and with orjson.

    The module's ``encode_event`` and ``encode_llm_event`` take the encoder, and a
    client built in the test chooses it too (``TRUBRICS_MP_JSON``). Without orjson,
    only the orjson run is skipped.
    """
    if request.param == "orjson":
        pytest.importorskip("orjson", reason=ORJSON_ABSENT)
        monkeypatch.delenv(JSON_ENV, raising=False)
    else:
        monkeypatch.setenv(JSON_ENV, "json")
    encoder = choose_encoder(os.environ)
    assert encoder.name == request.param
    for name in ("encode_event", "encode_llm_event"):
        if hasattr(request.module, name):
            bound = functools.partial(getattr(_serialize, name), encoder=encoder)
            monkeypatch.setattr(request.module, name, bound)
    return encoder


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    """``harness(script=ANSWER_200, **settings)``: a flusher loop in a thread
    (``support/flusher_harness.py``); every one made is stopped after the test."""
    with harnesses() as make:
        yield make
