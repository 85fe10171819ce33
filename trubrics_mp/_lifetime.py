"""Lifetime: when the flusher leaves, as one value (a :class:`Phase`).

::

    serving --SIGTERM--> leaving (serves on until its deadline) --deadline--> ending
    serving | leaving --owner gone, owner exec, shutdown request--> ending
    ending: no new connections; every batch leaves at once; the flusher exits
            when nothing is unsettled or at the deadline, whichever is first

The signal handler and :meth:`Lifetime.request_end` only record a request
(safe from a signal handler or another thread); the main loop turns requests
into phase changes in :meth:`Lifetime.due`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

from ._process import pid_alive, watch_exit

OWNER_POLL_S = 0.5  # how often the owner's pid is checked where no pidfd exists

SERVING = "serving"
LEAVING = "leaving"
ENDING = "ending"


@dataclasses.dataclass(frozen=True)
class Phase:
    """``name`` is serving, leaving or ending; ``deadline`` is monotonic seconds."""

    name: str = SERVING
    reason: str = ""
    deadline: Optional[float] = None


class Lifetime:
    """The phase, the owner and exec watches, and the pending requests to leave.

    Invariants: the phase only moves forward (serving, leaving, ending); once
    ending, its deadline only moves earlier.
    """

    def __init__(
        self,
        shutdown_timeout_s: float,
        owner_pid: int,
        exec_watch_fd: Optional[int],
        clock: Callable[[], float],
    ) -> None:
        self.phase = Phase()
        self._timeout_s = shutdown_timeout_s
        self._owner_pid = owner_pid
        self._clock = clock
        self._sigterm = False
        self._requested: Optional[str] = None
        self._within_s: Optional[float] = None
        self._owner_checked_at = 0.0
        owner_fd = watch_exit(owner_pid)
        self._poll_owner = owner_fd is None
        self.watches: dict[int, str] = {}  # descriptor -> why its readiness means "leave"
        if owner_fd is not None:
            self.watches[owner_fd] = "owner process exited"
        if exec_watch_fd is not None:  # end of file: the owner and its children exec'd or left
            self.watches[exec_watch_fd] = "the owner replaced its program (exec)"

    @property
    def ending(self) -> bool:
        return self.phase.name == ENDING

    # -- requests (signal handler, other threads, the main loop) -----------------------
    def on_sigterm(self, *_args: object) -> None:
        self._sigterm = True

    def request_end(self, reason: str, within_s: Optional[float] = None) -> None:
        """Leave, delivering for ``within_s`` (the owner's own deadline) if given, else
        for ``shutdown_timeout``."""
        self._requested = self._requested or reason
        if within_s is not None:
            self._within_s = within_s

    # -- the main loop -------------------------------------------------------------------
    def due(self, now: float) -> Optional[str]:
        """Why the end should begin now, if it should."""
        if self._sigterm and self.phase.name == SERVING:
            self.phase = Phase(LEAVING, "SIGTERM", now + self._timeout_s)
        if self._requested is not None and not self.ending:
            return self._requested
        if self.phase.name == LEAVING and self.phase.deadline is not None:
            return self.phase.reason if now >= self.phase.deadline else None
        if self._poll_owner and not self.ending and now - self._owner_checked_at >= OWNER_POLL_S:
            self._owner_checked_at = now
            if not pid_alive(self._owner_pid):
                return "owner process exited"
        return None

    def begin_end(self, reason: str, now: float) -> bool:
        """Enter the ending phase; True the first time (the caller then stops listening)."""
        deadline = now + (self._timeout_s if self._within_s is None else self._within_s)
        if self.ending:
            assert self.phase.deadline is not None
            earlier = min(deadline, self.phase.deadline)
            self.phase = dataclasses.replace(self.phase, deadline=earlier)
            return False
        self.phase = Phase(ENDING, reason, deadline)
        self._poll_owner = False
        return True

    def close_watches(self) -> list[int]:
        """Close the watch descriptors (unregister them from any selector first)."""
        closed = list(self.watches)
        for fd in closed:
            os.close(fd)
        self.watches.clear()
        return closed

    def finished(self, now: float, unsettled: int) -> bool:
        if not self.ending:
            return False
        assert self.phase.deadline is not None
        return unsettled == 0 or now >= self.phase.deadline

    def next_deadline(self) -> Optional[float]:
        """The next time :meth:`due` or :meth:`finished` may change its answer."""
        times = [self.phase.deadline] if self.phase.deadline is not None else []
        if self._poll_owner:
            times.append(self._owner_checked_at + OWNER_POLL_S)
        return min(times) if times else None
