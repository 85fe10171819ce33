"""Server subprocesses for the demo and the test suite: start, wait for a line, stop.

Not part of the public API. ``trubrics_mp.demo.services`` runs the demo's
collector and gunicorn with it; ``tests/support`` runs every server of the
test suite with it (the collector, gunicorn, uWSGI, Celery workers, Redis).

- :class:`ServerProcess`: a command in a session (so a process group) of its
  own, its stdout and stderr merged and read line by line by a thread (and
  copied to ``log_path`` when given); :meth:`ServerProcess.wait_for` waits for
  lines matching a pattern; :meth:`ServerProcess.stop` signals, waits, and
  SIGKILLs the whole group past a deadline.
- :func:`poll_until`: call a condition until it holds, or fail after a timeout.
- :func:`is_running`: whether a pid is a live process (a zombie is not).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Callable, ClassVar, Mapping, Optional, Sequence, TypeVar, Union

POLL_S = 0.02
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 20.0
READER_JOIN_S = 10.0  # descendants that outlive the server may hold its output pipe
READER_THREAD_PREFIX = "server-output"
TAIL_LINES = 60
EXIT_GRACE_S = 1.0  # for the reader to get what an exited process wrote last

T = TypeVar("T")
S = TypeVar("S", bound="ServerProcess")
What = Union[str, Callable[[], str]]


class WaitTimeout(TimeoutError):
    """:func:`poll_until` gave up: the condition did not hold in time."""


class ServerError(RuntimeError):
    """A server did not start or did not print what was waited for."""


def poll_until(
    condition: Callable[[], T], timeout: float, what: What, *, interval: float = POLL_S
) -> T:
    """Call ``condition`` until it returns a true value, and return that value.

    It is called at least once, and once more after the deadline. Past
    ``timeout`` seconds, raises :class:`WaitTimeout` naming ``what`` (a string,
    or a function called then, to describe the state at that moment).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {described}")
        time.sleep(interval)


def _stat_fields(pid: int) -> Optional[list[str]]:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp...)."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited.

    A zombie (exited, its status not yet collected by its parent) is not running.
    """
    fields = _stat_fields(pid)
    return fields is not None and len(fields) > 0 and fields[0] not in ("Z", "X")


def live_group_members(pgid: int) -> list[int]:
    """Pids of the running (not zombie) processes of process group ``pgid``."""
    found = []
    for entry in os.scandir("/proc"):
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields and len(fields) > 2 and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            found.append(int(entry.name))
    return found


class ServerProcess:
    """A server subprocess in its own session; its merged output kept line by line.

    ``env`` holds variables set on top of this process's environment
    (``PYTHONUNBUFFERED=1`` is always set). With ``ready``, :meth:`start` waits
    for a line matching it (:attr:`ready_match`). Failures raise
    :attr:`failure` (a subclass may choose its own exception type). The object
    can be started again once stopped; it is a context manager whose exit
    stops it.
    """

    failure: ClassVar[type[Exception]] = ServerError

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "",
        ready: Optional[str] = None,
        cwd: Optional[Path] = None,
        env: Optional[Mapping[str, str]] = None,
        log_path: Optional[Path] = None,
    ) -> None:
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])
        self.ready = ready
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen[str]] = None
        self.lines: list[str] = []
        self.returncode: Optional[int] = None
        self.stop_seconds: Optional[float] = None
        self.killed = False  # whether the last stop had to SIGKILL the group
        self._ready_match: Optional[re.Match[str]] = None
        self._changed = threading.Condition()
        self._eof = False
        self._reader: Optional[threading.Thread] = None

    # -- starting ------------------------------------------------------------------
    def start(self: S, deadline_s: float = START_DEADLINE_S) -> S:
        """Spawn the process; with ``ready``, wait for its ready line (else stop it)."""
        if self.proc is not None and self.proc.poll() is None:
            raise self.failure(f"{self.name} is already running")
        if self.proc is not None and self.returncode is None:
            self._close()  # it exited by itself: let its reader finish first
        with self._changed:
            self.lines, self._eof = [], False
        self.returncode, self.stop_seconds, self.killed = None, None, False
        self._ready_match = None
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: a Ctrl-C is not its to get
        )
        log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None  # noqa: SIM115
        assert self.proc.stdout is not None
        self._reader = threading.Thread(
            target=self._drain,
            args=(self.proc.stdout, log),
            name=f"{READER_THREAD_PREFIX} {self.name}",
            daemon=True,
        )
        self._reader.start()
        if self.ready is not None:
            try:
                self._ready_match = self.wait_for(self.ready, deadline_s=deadline_s)[0]
            except BaseException:
                self.kill()
                raise
        return self

    def _drain(self, stream: IO[str], log: Optional[IO[str]]) -> None:
        try:
            for line in stream:
                if log is not None:
                    log.write(line)
                    log.flush()
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            stream.close()
            if log is not None:
                log.close()
            with self._changed:
                self._eof = True
                self._changed.notify_all()

    @property
    def ready_match(self) -> re.Match[str]:
        """The match of the ready line found by :meth:`start`."""
        if self._ready_match is None:
            raise self.failure(f"{self.name} has printed no ready line")
        return self._ready_match

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise self.failure(f"{self.name} was not started")
        return self.proc.pid

    # -- output --------------------------------------------------------------------
    @property
    def output_text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def tail(self, lines: int = TAIL_LINES) -> str:
        with self._changed:
            return "\n".join(self.lines[-lines:])

    def matches(self, pattern: str) -> list[re.Match[str]]:
        """The matches of ``pattern`` in the lines printed so far, in order."""
        regex = re.compile(pattern)
        with self._changed:
            found = [regex.search(line) for line in self.lines]
        return [match for match in found if match is not None]

    def wait_for(
        self, pattern: str, count: int = 1, deadline_s: float = START_DEADLINE_S
    ) -> list[re.Match[str]]:
        """Wait until ``count`` lines match ``pattern``; returns every match so far.

        Raises :attr:`failure` if the output ends (the process exited) first, or
        at the deadline.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + deadline_s
        exited_at: Optional[float] = None
        with self._changed:
            while True:
                found = [m for m in map(regex.search, self.lines) if m is not None]
                if len(found) >= count:
                    return found
                now = time.monotonic()
                if exited_at is None and self.poll() is not None:
                    exited_at = now  # a child may still hold the pipe: no end of output
                left = deadline - now
                gone = self._eof or (exited_at is not None and now - exited_at > EXIT_GRACE_S)
                if gone or left <= 0:
                    tail = "\n".join(self.lines[-TAIL_LINES:])
                    if gone:
                        why = f"{self.name} exited before printing {pattern!r}"
                    else:
                        why = f"{self.name}: no {pattern!r} line within {deadline_s:g} s"
                    raise self.failure(f"{why}; its last lines:\n{tail}")
                self._changed.wait(min(left, POLL_S if exited_at else 1.0))

    # -- stopping ------------------------------------------------------------------
    def poll(self) -> Optional[int]:
        """The exit status, or None while it runs (or if it was never started)."""
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, sig: int) -> None:
        """Signal the process itself (not its group), if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        """Signal every process of its process group (workers, helpers...)."""
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def group_alive(self) -> bool:
        """Whether a running (not zombie) process of its process group remains."""
        return bool(live_group_members(self.pid))

    def kill_group(self) -> None:
        """SIGKILL the whole process group, whether its leader still runs or not."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGKILL)
        self.proc.wait()

    def stop(
        self, deadline_s: float = STOP_DEADLINE_S, *, sig: Optional[int] = signal.SIGTERM
    ) -> Optional[int]:
        """Send ``sig`` (None: it was already asked to stop), wait up to ``deadline_s``,
        then SIGKILL the group; idempotent.

        Anything raised while waiting (a second Ctrl-C) kills the group first.
        Sets :attr:`stop_seconds` and :attr:`killed`; returns the exit status
        (None if never started). Processes of the group that outlive a process
        which exited by itself are left alone: see :meth:`reap_group`.
        """
        if self.proc is None:
            return None
        if self.returncode is None:
            started = time.monotonic()
            try:
                if sig is not None:
                    self.send_signal(sig)
                self.proc.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.kill_group()
            except BaseException:
                self.killed = True
                self.kill_group()
                raise
            finally:
                self.stop_seconds = time.monotonic() - started
                self._close()
        return self.returncode

    def kill(self) -> None:
        """Clean-up path: SIGKILL the group if the process still runs; idempotent.

        A process that already exited is left alone, and so are the processes
        it left behind (a test's leak check is there to report them).
        """
        if self.proc is None or self.returncode is not None:
            return
        if self.proc.poll() is None:
            self.killed = True
            self.kill_group()
        self._close()

    def reap_group(self, deadline_s: float = STOP_DEADLINE_S) -> bool:
        """Wait for the rest of the group (say, a flusher) to exit; SIGKILL it past the
        deadline. Returns True if nothing had to be killed."""
        try:
            poll_until(lambda: not self.group_alive(), deadline_s, f"{self.name}'s group")
        except WaitTimeout:
            self.kill_group()
            return False
        return True

    def _close(self) -> None:
        assert self.proc is not None
        self.proc.wait()
        self.returncode = self.proc.returncode
        if self._reader is not None:
            self._reader.join(timeout=READER_JOIN_S)  # else it ends with the last holder

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
