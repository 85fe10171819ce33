"""Generic helpers for tests that run a real host server (gunicorn, uWSGI, Celery...).

Stable API (other host tests import it):

- ``HostProcess(argv, ready=REGEX, cwd=..., env=...)``: a server subprocess whose
  stdout+stderr are drained by a thread; ``start()`` waits for a line matching
  ``ready`` and returns the match; ``wait_for_line(regex)``, ``lines_matching(regex)``,
  ``send_signal(sig)``, ``stop(sig, deadline_s) -> seconds``; a context manager
  whose exit kills whatever is left.
- ``stop_process(proc, sig, deadline_s) -> seconds``: signal, wait, SIGKILL after
  the deadline (then raise ``StopTimeout``).
- ``drive(url, n_requests, concurrency) -> list[Reply]``: GET ``url`` with ``{seq}``
  replaced by 0..n-1, from a few threads; ``Reply(seq, status, body)`` in seq order
  (status 0: no HTTP answer).
- ``wait_http(url, deadline_s)``: poll until ``url`` answers 200.
- ``assert_no_traceback(text, allow=())``, ``tracebacks(text)``.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Optional

DEFAULT_DEADLINE_S = 60.0
HTTP_TIMEOUT_S = 30.0
READER_JOIN_S = 10.0  # descendants that outlive the server may hold its output pipe


class StopTimeout(AssertionError):
    """The process ignored its stop signal until the deadline and was SIGKILLed."""


class Reply(NamedTuple):
    seq: int
    status: int
    body: str


def stop_process(
    proc: subprocess.Popen[str], sig: int = signal.SIGTERM, deadline_s: float = DEFAULT_DEADLINE_S
) -> float:
    """Send ``sig``, wait for the exit; SIGKILL and raise ``StopTimeout`` past the deadline.

    Returns the seconds between the signal and the exit.
    """
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise StopTimeout(f"pid {proc.pid} still running {deadline_s}s after {sig!r}") from None
    return time.monotonic() - started


def get(url: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, str]:
    """One GET; an HTTP error status is returned, a connection error is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as error:
        return 0, repr(error)


def drive(url: str, n_requests: int, concurrency: int = 4, start: int = 0) -> list[Reply]:
    """GET ``url`` (``{seq}`` replaced by start..start+n-1) from ``concurrency`` threads."""

    def one(seq: int) -> Reply:
        status, body = get(url.replace("{seq}", str(seq)))
        return Reply(seq, status, body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(start, start + n_requests)))


def wait_http(url: str, deadline_s: float = DEFAULT_DEADLINE_S) -> str:
    """Poll ``url`` until it answers 200; returns the body."""
    deadline = time.monotonic() + deadline_s
    while True:
        status, body = get(url, timeout=5.0)
        if status == 200:
            return body
        if time.monotonic() >= deadline:
            raise AssertionError(f"{url} did not answer 200 within {deadline_s}s: {status} {body}")
        time.sleep(0.1)


def tracebacks(text: str) -> list[str]:
    """Every Python traceback in ``text``, each up to its exception line."""
    found, current = [], None
    for line in text.splitlines():
        if "Traceback (most recent call last)" in line:
            current = [line]
        elif current is not None:
            current.append(line)
            if line and not line[0].isspace():  # the exception line ends it
                found.append("\n".join(current))
                current = None
    if current is not None:
        found.append("\n".join(current))
    return found


def assert_no_traceback(text: str, allow: Sequence[str] = ()) -> None:
    """Fail if ``text`` (a server's output) holds a traceback none of ``allow`` matches.

    ``allow``: regexes for tracebacks the host itself prints by design (say
    gunicorn's ``SystemExit: 1`` when it aborts a worker that timed out).
    """
    for block in tracebacks(text):
        if not any(re.search(pattern, block) for pattern in allow):
            raise AssertionError(f"a traceback was printed:\n{block}")


class HostProcess:
    """A server subprocess; its merged output is collected line by line."""

    def __init__(
        self,
        argv: Sequence[str],
        ready: str,
        cwd: Optional[Path] = None,
        env: Optional[dict[str, str]] = None,
    ) -> None:
        self.argv = list(argv)
        self.ready = re.compile(ready)
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: Optional[subprocess.Popen[str]] = None
        self.lines: list[str] = []
        self.returncode: Optional[int] = None
        self._changed = threading.Condition()
        self._reader: Optional[threading.Thread] = None
        self._eof = False

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def output_text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def start(self, deadline_s: float = DEFAULT_DEADLINE_S) -> re.Match[str]:
        """Spawn the process and wait for its ``ready`` line."""
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as under systemd
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        try:
            return self.wait_for_line(self.ready.pattern, deadline_s)
        except BaseException:
            self.kill()
            raise

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # closed by kill() while a leftover descendant still held the pipe
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def lines_matching(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        with self._changed:
            found = [regex.search(line) for line in self.lines]
        return [m for m in found if m is not None]

    def wait_for_line(
        self, pattern: str, deadline_s: float = DEFAULT_DEADLINE_S, count: int = 1
    ) -> re.Match[str]:
        """Wait until ``count`` lines match ``pattern``; returns the last such match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + deadline_s
        with self._changed:
            while True:
                found = [m for m in map(regex.search, self.lines) if m is not None]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "exited" if self._eof else f"gave none within {deadline_s}s"
                    tail = "\n".join(self.lines[-60:])
                    raise AssertionError(f"waiting for {pattern!r}: the process {why}:\n{tail}")
                self._changed.wait(min(left, 1.0))

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None, "not started"
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, deadline_s: float = DEFAULT_DEADLINE_S) -> float:
        """Stop as production does (``sig``), SIGKILL past the deadline; returns seconds."""
        assert self.proc is not None, "not started"
        try:
            return stop_process(self.proc, sig, deadline_s)
        finally:
            self._close()

    def kill(self) -> None:
        """Cleanup path: if still running, SIGKILL it and its process group; idempotent.

        A server already stopped is left alone, so that descendants it left
        behind are still there for the suite's leak check to report.
        """
        if self.proc is None or self.returncode is not None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # workers and helpers too
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        assert self.proc is not None
        self.returncode = self.proc.returncode
        if self._reader is not None:
            self._reader.join(timeout=READER_JOIN_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> HostProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
