"""Server subprocesses of the demo: the collector and gunicorn.

Each runs in a session (so process group) of its own, so a Ctrl-C in the
terminal reaches only the demo, which then stops them in order: gunicorn
first (its master delivers every event and stops the flusher), the collector
last. Their output goes to a log file in the demo's temporary directory.

Caveat: if the demo itself is SIGKILLed, nothing stops them; the flusher
still exits on its own once the gunicorn master is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional, Sequence

POLL_S = 0.02
START_DEADLINE_S = 60.0
HTTP_TIMEOUT_S = 30.0


class DemoError(RuntimeError):
    """Something the demo needs did not happen; the message says what."""


class Service:
    """A server subprocess in its own process group, its output in ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise DemoError(f"{self.name} was not started")
        return self.proc.pid

    def start(self) -> Service:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def matches(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        found = (regex.search(line) for line in self.log_text().splitlines())
        return [match for match in found if match is not None]

    def wait_for(
        self, pattern: str, count: int = 1, deadline_s: float = START_DEADLINE_S
    ) -> list[re.Match[str]]:
        """Wait until ``count`` log lines match ``pattern``; DemoError if it exits first."""
        deadline = time.monotonic() + deadline_s
        while True:
            found = self.matches(pattern)
            if len(found) >= count:
                return found
            if self.poll() is not None:
                raise DemoError(f"{self.name} exited early; its last lines:\n{self.tail()}")
            if time.monotonic() >= deadline:
                raise DemoError(f"{self.name}: no {pattern!r} line within {deadline_s:.0f} s")
            time.sleep(POLL_S)

    def poll(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def group_alive(self) -> bool:
        """Whether a live (not zombie) process of this service's process group remains."""
        return bool(live_group_members(self.pid))

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc is not None:
            self.proc.wait()

    def stop(self, deadline_s: float) -> Optional[int]:
        """SIGTERM, wait up to ``deadline_s``, then SIGKILL the whole group; idempotent.

        A second Ctrl-C while waiting kills the group at once (and is re-raised).
        Returns the exit status (None if never started).
        """
        if self.proc is None:
            return None
        try:
            self.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.kill_group()
        except KeyboardInterrupt:
            self.kill_group()
            raise
        self.reap_group(deadline_s)
        return self.proc.returncode

    def reap_group(self, deadline_s: float) -> bool:
        """Wait for the rest of the group (say, a flusher) to exit; SIGKILL it past the
        deadline. Returns True if nothing had to be killed."""
        deadline = time.monotonic() + deadline_s
        while self.group_alive():
            if time.monotonic() >= deadline:
                self.kill_group()
                return False
            time.sleep(POLL_S)
        return True


def live_group_members(pgid: int) -> list[int]:
    """Pids of the live processes of process group ``pgid`` (read from ``/proc``).

    Zombies are left out: an orphan nobody reaped yet is not running.
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            found.append(int(entry.name))
    return found


def get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON answer (DemoError on any failure)."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise DemoError(f"GET {url} failed: {exc}") from exc
