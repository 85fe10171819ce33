"""The suite's leak check waits for, and kills, only what this run's test left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.processes import RUN_ENV, is_running, leftovers, poll_until

SLEEPER = "import time; time.sleep(120)"


def orphan(env: dict[str, str]) -> int:
    """A sleeper whose parent has exited (so it is not a child of this process)."""
    starter = (
        "import subprocess, sys;"
        f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}], start_new_session=True,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL);"
        "print(p.pid)"
    )
    out = subprocess.run(
        [sys.executable, "-c", starter], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.fixture
def orphans() -> Iterator[list[int]]:
    made: list[int] = []
    yield made
    for pid in made:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    poll_until(lambda: not any(is_running(pid) for pid in made), 30.0, "the sleepers exit")


def test_a_process_of_this_test_but_another_run_is_not_a_leftover(
    request: pytest.FixtureRequest, orphans: list[int]
) -> None:
    nodeid = request.node.nodeid
    ours = orphan(dict(os.environ))
    other = orphan({**os.environ, RUN_ENV: "another-run"})
    orphans += [ours, other]
    found = {proc.pid for proc in leftovers(nodeid)}
    assert ours in found
    assert other not in found
