"""The test plumbing that needs no process: ``poll_until``, the internal-error check,
fixtures defined once, and the unit layer's own guard against starting processes."""

from __future__ import annotations

import ast
import collections
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.internal_errors import InternalErrors, failing_on_internal_errors
from support.processes import WaitTimeout, poll_until

from trubrics_mp import Trubrics
from unit.conftest import ProcessStarted

TESTS = Path(__file__).resolve().parents[1]


# -- poll_until -----------------------------------------------------------------------
def test_poll_until_returns_the_first_true_value() -> None:
    answers = iter([0, None, "", 7, 8])
    assert poll_until(lambda: next(answers), 60, "a number", interval=0) == 7
    assert next(answers) == 8  # no call after the first true value


def test_poll_until_names_what_it_waited_for() -> None:
    calls: list[int] = []

    def never() -> bool:
        calls.append(1)
        return False

    with pytest.raises(WaitTimeout, match=r"timed out after 0 s waiting for the moon$"):
        poll_until(never, 0, "the moon")
    assert len(calls) == 1  # called once even with no time at all
    with pytest.raises(TimeoutError, match=r"waiting for state 2$"):
        poll_until(never, 0, lambda: f"state {len(calls)}")  # described at the deadline


# -- the internal-error check ----------------------------------------------------------
def _exc_info() -> tuple[type[BaseException], BaseException, None]:
    error = RuntimeError("boom")
    return (type(error), error, None)


@pytest.mark.internal_errors_allowed
@pytest.mark.parametrize(
    ("logger", "level", "message", "with_exception", "caught"),
    [
        ("trubrics_mp", logging.ERROR, "trubrics_mp: internal error in track()", True, True),
        ("trubrics_mp", logging.ERROR, "an internal error, no traceback", False, True),
        ("trubrics_mp.sub.module", logging.CRITICAL, "anything", True, True),
        ("trubrics", logging.ERROR, "anything at all", True, True),
        ("trubrics.x", logging.ERROR, "internal error", False, True),
        ("trubrics_mp", logging.ERROR, "track() dropped an invalid event: ...", False, False),
        ("trubrics_mp", logging.WARNING, "internal error", True, False),
        ("myapp.trubrics_mp", logging.ERROR, "internal error", True, False),
        ("trubrics_mpx", logging.ERROR, "internal error", True, False),
    ],
)
def test_what_counts_as_an_internal_error(
    logger: str, level: int, message: str, with_exception: bool, caught: bool
) -> None:
    catcher = InternalErrors()
    with catcher.installed():
        logging.getLogger(logger).log(
            level, message, exc_info=_exc_info() if with_exception else None
        )
    assert [r.getMessage() for r in catcher.records] == ([message] if caught else [])


@pytest.mark.internal_errors_allowed
def test_an_internal_error_fails_the_test() -> None:
    expected = r"1 internal error\(s\)(.|\n)*boom"
    with pytest.raises(pytest.fail.Exception, match=expected), failing_on_internal_errors():
        logging.getLogger("trubrics_mp.x").error("internal error: boom")
    with failing_on_internal_errors(allowed=True) as catcher:  # what the marker does
        logging.getLogger("trubrics_mp.x").error("internal error: allowed")
    assert len(catcher.records) == 1


def test_other_records_fail_nothing() -> None:
    with failing_on_internal_errors() as catcher:
        logging.getLogger("trubrics_mp").warning("internal error (a warning)")
        logging.getLogger("trubrics_mp").error("track() dropped an invalid event")
        logging.getLogger("elsewhere").error("internal error", exc_info=_exc_info())
    assert catcher.records == []


@pytest.mark.internal_errors_allowed
def test_a_swallowed_error_of_track_is_seen(
    no_internal_errors: InternalErrors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message the client really logs, through the suite's autouse fixture."""

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("a bug in the library")

    monkeypatch.setattr("trubrics_mp._client.encode_event", broken)
    client = Trubrics("k", disabled=True)
    client.track(user_id="u", event="e")  # never raises: it logs instead
    (record,) = no_internal_errors.records
    assert "internal error in track()" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is not None
    assert str(record.exc_info[1]) == "a bug in the library"


# -- fixtures ---------------------------------------------------------------------
def _fixtures_defined() -> dict[str, list[str]]:
    """{fixture name: [where it is defined, ...]} over every Python file of tests/."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                "fixture" in ast.unparse(decorator) for decorator in node.decorator_list
            ):
                found[node.name].append(f"{path.relative_to(TESTS)}:{node.lineno}")
    return found


def test_no_fixture_shadows_another() -> None:
    fixtures = _fixtures_defined()
    assert {"collector", "no_leaked_processes", "no_internal_errors", "app"} <= set(fixtures)
    shadowed = {name: places for name, places in fixtures.items() if len(places) > 1}
    assert shadowed == {}, "one definition per fixture name, in the conftest that shares it"


# -- the unit layer's guard ------------------------------------------------------------
def test_the_unit_layer_refuses_to_start_processes(no_process_started: list[str]) -> None:
    with pytest.raises(ProcessStarted):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    with pytest.raises(ProcessStarted):
        os.fork()
    assert no_process_started == ["subprocess.Popen", "os.fork"]
    no_process_started.clear()  # else the fixture fails this test at teardown


def test_a_refusal_the_code_swallowed_is_still_recorded(no_process_started: list[str]) -> None:
    def careless() -> None:
        try:
            subprocess.run(["true"], check=False)
        except Exception:
            pass  # as a library that cannot start its helper might

    careless()
    assert no_process_started == ["subprocess.Popen"]  # so the fixture fails the test
    no_process_started.clear()
