"""The spool's lock against a real second process, and its release by SIGKILL.

A child process opens a spool, appends, says so on its standard output and
waits on its standard input. While it lives, this process is refused
(``busy``) and ``spool purge`` exits 1; once it is SIGKILLed, the kernel drops
its lock with it: the successor opens the spool and replays what the child
appended (a SIGKILL loses no appended record: it is in the page cache).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trubrics_mp.__main__ import main
from trubrics_mp._spool import Spool, SpoolUnavailable

HOLDER = """
import sys
from trubrics_mp._spool import Spool
spool = Spool.open(sys.argv[1], fsync_every_s=None)
assert spool.append("publish_events", "tag", [b'{"n":1}', b'{"n":2}']).ok
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_live_holder_makes_the_spool_busy_and_its_sigkill_hands_it_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        with pytest.raises(SpoolUnavailable) as caught:
            Spool.open(str(tmp_path))
        assert caught.value.reason == "busy"
        assert f"process {child.pid}" in str(caught.value)
        assert main(["spool", "purge", str(tmp_path)]) == 1
        capsys.readouterr()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with Spool.open(str(tmp_path)) as spool:
        assert [p.events for p in spool.replay()] == [[b'{"n":1}', b'{"n":2}']]
