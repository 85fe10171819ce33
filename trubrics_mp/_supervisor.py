"""Supervision of the flusher process, as one client process sees it.

The owner (the process that made the client) starts the flusher; any process
of the pipeline restarts it when it finds it gone (binding the address is the
lock, so one restart wins). Only the owner may stop it, and only the process
that started a flusher can reap it.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from typing import Optional

from ._config import Config
from ._logs import AnyLogger
from ._process import pid_alive
from ._spawn import FlusherStartError, start_flusher

RESTART_PAUSE_S = 1.0  # at most one restart attempt per process in this time


class Supervisor:
    """Start, restart, reap and stop the flusher of one pipeline.

    Invariants: ``started`` is a flusher this process started and has not
    reaped; ``exec_watch`` (the write end of the exec watch pipe) is held
    from the owner's first start until it stops the pipeline.
    """

    def __init__(self, config: Config, address: bytes, owner_pid: int, logger: AnyLogger) -> None:
        self.config = config
        self.address = address
        self.owner_pid = owner_pid
        self.log = logger
        self.started: Optional[subprocess.Popen[bytes]] = None
        self.exec_watch: Optional[int] = None
        self._next_restart_at = 0.0

    @property
    def may_stop(self) -> bool:
        """Whether this process owns the pipeline and started the running flusher."""
        return os.getpid() == self.owner_pid and self.started is not None

    @property
    def owner_alive(self) -> bool:
        return pid_alive(self.owner_pid)

    def forget_parent(self) -> None:
        """In a forked child: the parent's flusher is not ours to reap.

        The inherited exec watch stays open on purpose: the flusher then also
        outlives the owner's exec while a forked child still runs.
        """
        self.started = None
        self._next_restart_at = 0.0

    def start(self, generation: int) -> None:
        """Start a flusher on the address (the owner's first start, or a restart)."""
        self._reap()
        watch_r = None
        if os.getpid() == self.owner_pid:  # only the owner's program can be replaced
            self.release()
            watch_r, self.exec_watch = os.pipe()  # both ends close on exec
        try:
            self.started = start_flusher(
                self.config, self.address, self.owner_pid, generation, watch_r
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # in use: another process restarted it
                raise
        finally:
            if watch_r is not None:
                os.close(watch_r)

    def restart(self, generation: int) -> bool:
        """Start a replacement if allowed now; True if a flusher should be listening."""
        now = time.monotonic()
        if now < self._next_restart_at or not self.owner_alive:
            return False
        self._next_restart_at = now + RESTART_PAUSE_S
        try:
            self.start(generation)
        except (OSError, FlusherStartError) as exc:
            self.log.error("the flusher is gone and could not be restarted: %s", exc)
            return False
        self.log.warning("the flusher was gone: started a new one")
        return True

    def wait_exit(self, deadline: Optional[float]) -> None:
        """After a shutdown request: reap the flusher we started, killing it if overdue."""
        process, self.started = self.started, None
        if process is None:
            return
        try:
            process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.log.error("the flusher did not exit in time: killing it")
            process.kill()
            process.wait()

    def release(self) -> None:
        """Close the exec watch: the flusher no longer waits for our exec."""
        if self.exec_watch is not None:
            os.close(self.exec_watch)
            self.exec_watch = None

    def _reap(self) -> None:
        if self.started is not None and self.started.poll() is not None:
            self.started = None
