"""Fail any test during which the library logged an internal error.

As sentry-python's ``internal_exceptions`` fixture does for its SDK: the
library promises that ``track()`` never raises, so it logs what it swallowed
(``trubrics_mp: internal error in track(); event dropped``, with the
traceback). A test that passes while that happens would hide a bug.

An internal error is an ERROR (or worse) record, from a logger named
``trubrics`` or ``trubrics_mp`` or below, whose message contains "internal
error" or that carries exception info. Only records of the test process are
seen (a flusher or an application process logs to its own stderr).

A test that provokes one on purpose is marked ``@pytest.mark.internal_errors_allowed``
(registered in ``pyproject.toml``): the records are still collected, and the
fixture's value (:class:`InternalErrors`) lets the test look at them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

LOGGER_NAMES = ("trubrics", "trubrics_mp")
MARKER = "internal_errors_allowed"


def is_internal_error(record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
        return False
    has_exception = record.exc_info is not None and record.exc_info[0] is not None
    return has_exception or "internal error" in record.getMessage()


class InternalErrors(logging.Handler):
    """Collects the internal errors logged while it is installed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if is_internal_error(record):
            self.records.append(record)

    @contextlib.contextmanager
    def installed(self) -> Iterator[InternalErrors]:
        """Attached to the library's loggers (records of their children reach it too)."""
        loggers = [logging.getLogger(name) for name in LOGGER_NAMES]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger in loggers:
                logger.removeHandler(self)

    def report(self) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(record) for record in self.records)


@contextlib.contextmanager
def failing_on_internal_errors(allowed: bool = False) -> Iterator[InternalErrors]:
    """Collect internal errors; at the end, fail (``pytest.fail``) if any, unless allowed."""
    catcher = InternalErrors()
    with catcher.installed():
        yield catcher
    if catcher.records and not allowed:
        pytest.fail(
            f"the library logged {len(catcher.records)} internal error(s) during the test"
            f" (mark it {MARKER} if that is what it checks):\n{catcher.report()}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def no_internal_errors(request: pytest.FixtureRequest) -> Iterator[InternalErrors]:
    allowed = request.node.get_closest_marker(MARKER) is not None
    with failing_on_internal_errors(allowed) as catcher:
        yield catcher
