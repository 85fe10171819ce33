"""The test plumbing that needs no process: ``poll_until``."""

from __future__ import annotations

import pytest
from support.processes import WaitTimeout, poll_until


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
