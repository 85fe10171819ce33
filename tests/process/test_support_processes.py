"""The test plumbing that runs processes: ``ServerProcess``, ``is_running``, the leak check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import psutil
import pytest
from support.processes import (
    ServerError,
    ServerProcess,
    is_running,
    leftovers,
    poll_until,
    stop_leftovers,
)

# A server that prints a line, starts a helper in its process group, then waits.
SERVER = """
import signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"helper {helper.pid}", flush=True)
print("ready on port 1234", flush=True)
print("a second line", file=sys.stderr, flush=True)
time.sleep(600)
"""


def server(mode: str = "polite", log_path: Optional[Path] = None) -> ServerProcess:
    argv = [sys.executable, "-c", SERVER, mode]
    return ServerProcess(argv, name="test server", ready=r"ready on port (\d+)", log_path=log_path)


def helper_pid(process: ServerProcess) -> int:
    return int(process.matches(r"^helper (\d+)$")[0].group(1))


def test_is_running_treats_a_zombie_as_gone() -> None:
    assert is_running(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        poll_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 60, "exit")
        assert not is_running(child.pid)  # exited, not yet reaped by us: a zombie
    finally:
        child.wait()
    assert not is_running(child.pid)  # reaped: no such process
    assert not is_running(0) and not is_running(-1)


def test_a_server_is_ready_when_it_says_so_and_stops_with_its_group() -> None:
    with server() as process:
        assert process.ready_match.group(1) == "1234"
        assert process.wait_for(r"a second line")  # stderr is merged
        helper = helper_pid(process)
        assert is_running(helper)
        process.signal_group(signal.SIGTERM)  # the helper too, as systemd would
        poll_until(lambda: not is_running(helper), 60, "the helper to exit")
    assert process.returncode == -signal.SIGTERM and not process.killed


def test_a_server_that_ignores_sigterm_is_killed_with_its_group() -> None:
    process = server("stubborn").start()
    helper = helper_pid(process)
    assert process.stop(0.5) == -signal.SIGKILL
    assert process.killed and process.stop_seconds is not None
    poll_until(lambda: not is_running(helper), 60, "the helper to be killed")
    assert process.stop() == -signal.SIGKILL  # idempotent


def test_a_server_that_exits_before_its_ready_line_fails_clearly() -> None:
    process = ServerProcess(
        [sys.executable, "-c", "print('cannot bind'); raise SystemExit(3)"],
        name="broken",
        ready="listening",
    )
    with pytest.raises(ServerError, match=r"broken exited before printing 'listening'(.|\n)*bind"):
        process.start()
    assert process.returncode == 3


def test_a_server_that_never_gets_ready_is_stopped_at_the_deadline() -> None:
    process = server()
    process.ready = "never printed"
    with pytest.raises(ServerError, match=r"no 'never printed' line within 0\.5 s"):
        process.start(deadline_s=0.5)
    assert process.killed  # still running at the deadline: its group was killed
    assert process.returncode == -signal.SIGKILL


def test_a_server_restarts_and_keeps_a_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    process = server(log_path=log)
    for _ in range(2):
        with process:
            assert process.lines[0].startswith("helper ")
            process.signal_group(signal.SIGTERM)
    assert log.read_text().count("ready on port 1234") == 2


def test_the_leak_check_finds_kills_and_describes_what_a_test_left(
    request: pytest.FixtureRequest,
) -> None:
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    nodeid = request.node.nodeid
    assert left.pid in {p.pid for p in leftovers(nodeid)}
    description = stop_leftovers(nodeid, deadline_s=0.2)
    assert f"pid {left.pid}" in description and "time.sleep(600)" in description
    assert left.wait(60) == -signal.SIGKILL
    assert stop_leftovers(nodeid, deadline_s=0.2) == ""  # nothing left now
