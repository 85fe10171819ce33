"""Finding the machine's flusher, and starting one when there is none.

Any process that finds no flusher listening starts one (under the pipeline's
start lock, so two at the same instant end with one). The flusher belongs to
no client: it leaves by itself once no process has been connected for its
linger time (see ``_lifetime``). This process only reaps the short-lived
bootstrap process of a flusher it started (see ``_spawn``): it waits for it
(about 10 ms, once per flusher start), so the process that starts a flusher
pays that once, in the constructor or in the ``track()`` that restarts one.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
from typing import Optional

from . import _address
from . import _protocol as proto
from ._config import Config
from ._logs import AnyLogger
from ._spawn import FlusherStartError, start_flusher

RESTART_PAUSE_S = 1.0  # at most one start attempt per process in this time
BOOTSTRAP_WAIT_S = 2.0  # the starter waits this long at most for the bootstrap to exit
_NO_LISTENER = (errno.ECONNREFUSED, errno.ENOENT)


class Supervisor:
    """Connect to the pipeline's flusher, starting one first when none listens.

    Invariant: ``bootstraps`` holds the bootstrap processes this process
    started and has not reaped yet (each exits within moments of its start).
    """

    def __init__(self, config: Config, path: str, logger: AnyLogger) -> None:
        self.config = config
        self.path = path
        self.log = logger
        self.bootstraps: list[subprocess.Popen[bytes]] = []
        self._next_start_at = 0.0

    def forget_parent(self) -> None:
        """In a forked child: the parent's bootstrap processes are not ours to reap."""
        self.bootstraps = []
        self._next_start_at = 0.0

    def connect(self) -> Optional[socket.socket]:
        """A connection to the flusher, starting one if none listens; None if not now.

        Never waits for another process: when one holds the start lock (it is
        starting a flusher), or a start failed less than ``RESTART_PAUSE_S``
        ago, it is None. Starting one waits for its bootstrap (``_reap_soon``).
        """
        self.reap()
        try:
            return proto.connect(self.path)
        except OSError as exc:
            if exc.errno not in _NO_LISTENER:
                return None
        if not self._start():
            return None
        try:
            return proto.connect(self.path)
        except OSError:
            return None

    def _start(self) -> bool:
        """Start a flusher unless another process is at it; True if one should listen."""
        now = time.monotonic()
        if now < self._next_start_at:
            return False
        self._next_start_at = now + RESTART_PAUSE_S
        try:
            with _address.start_lock(self.path) as lock_fd:
                if lock_fd is None:
                    return False  # another process is starting one
                if _listening(self.path):
                    return True  # it was started while we looked
                generation = _address.next_generation(lock_fd)
                _remove_stale(self.path)
                bootstrap = start_flusher(self.config, self.path, generation)
        except (OSError, FlusherStartError) as exc:
            self.log.error("could not start the flusher: %s", exc)
            return False
        self._reap_soon(bootstrap)  # the lock is free again: others connect meanwhile
        self.log.info("started a flusher (generation %d) on %s", generation, self.path)
        return True

    def _reap_soon(self, bootstrap: subprocess.Popen[bytes]) -> None:
        """Wait for the bootstrap to fork the flusher and exit (about 10 ms), so no
        zombie is left in a process that never calls the client again; one slower
        than ``BOOTSTRAP_WAIT_S`` is reaped by a later call."""
        try:
            bootstrap.wait(timeout=BOOTSTRAP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.bootstraps.append(bootstrap)

    def reap(self) -> None:
        """Collect the bootstrap processes that have exited (no zombie is left)."""
        self.bootstraps = [process for process in self.bootstraps if process.poll() is None]


def _listening(path: str) -> bool:
    try:
        proto.connect(path).close()
    except OSError:
        return False
    return True


def _remove_stale(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
