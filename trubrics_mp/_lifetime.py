"""Lifetime: when the flusher leaves, as one value (a :class:`Phase`).

::

    serving --SIGTERM--> leaving (serves on until its deadline) --deadline--> ending
    serving | leaving --no process for linger_s, then nothing held (or all of it on
                        disk, with a spool); or a request--> ending
    ending: no new connections; every batch leaves at once; the flusher exits
            when nothing is unsettled or at the deadline, whichever is first

The flusher belongs to no process: it serves while any process is connected.
Once none has been for ``linger_s`` (so that hosts that start a process per
job, RQ say, do not start a flusher per job, and its batches keep filling
across jobs), it drains: everything it holds leaves at once, retried as its
policy says, and it ends when nothing is held any more. The signal handler
and :meth:`Lifetime.request_end` only record a request (safe from a signal
handler or another thread); the main loop turns requests into phase changes
in :meth:`Lifetime.due`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

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
    """The phase, the time since the last connection closed, and requests to leave.

    Invariants: the phase only moves forward (serving, leaving, ending); once
    ending, its deadline only moves earlier; ``idle_since`` is set exactly
    while no connection is open (it starts set: nobody has connected yet).
    """

    def __init__(
        self, shutdown_timeout_s: float, linger_s: float, clock: Callable[[], float]
    ) -> None:
        self.phase = Phase()
        self._timeout_s = shutdown_timeout_s
        self._linger_s = linger_s
        self._sigterm = False
        self._requested: Optional[str] = None
        self.idle_since: Optional[float] = clock()
        self.holding = 0  # events held or in flight, as last told
        self.all_on_disk = False  # and all of them are in the spool too, as last told

    @property
    def ending(self) -> bool:
        return self.phase.name == ENDING

    # -- requests (signal handler, other threads, the main loop) -----------------------
    def on_sigterm(self, *_args: object) -> None:
        self._sigterm = True

    def request_end(self, reason: str) -> None:
        """Leave, delivering for ``shutdown_timeout``."""
        self._requested = self._requested or reason

    def activity(
        self, connections: int, holding: int, now: float, all_on_disk: bool = False
    ) -> None:
        """``connections`` are open and ``holding`` events are held or in flight
        (``all_on_disk``: each of them is in the spool too)."""
        self.holding = holding
        self.all_on_disk = all_on_disk
        if connections:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now

    # -- the main loop -------------------------------------------------------------------
    def due(self, now: float) -> Optional[str]:
        """Why the end should begin now, if it should."""
        if self._sigterm and self.phase.name == SERVING:
            self.phase = Phase(LEAVING, "SIGTERM", now + self._timeout_s)
        if self.ending:
            return None
        if self._requested is not None:
            return self._requested
        if self.draining(now) and self.holding == 0:
            return f"no process connected for {self._linger_s:g} s, nothing held"
        if self.draining(now) and self.all_on_disk:  # the next flusher delivers the rest
            return f"no process connected for {self._linger_s:g} s, the rest on disk"
        if self.phase.name == LEAVING and self.phase.deadline is not None:
            return self.phase.reason if now >= self.phase.deadline else None
        return None

    def draining(self, now: float) -> bool:
        """No process has been connected for ``linger_s``: send all that is held now."""
        return self.idle_since is not None and now >= self.idle_since + self._linger_s

    def begin_end(self, reason: str, now: float) -> bool:
        """Enter the ending phase; True the first time (the caller then stops listening)."""
        if self.ending:
            return False
        self.phase = Phase(ENDING, reason, now + self._timeout_s)
        return True

    def finished(self, now: float, unsettled: int) -> bool:
        if not self.ending:
            return False
        assert self.phase.deadline is not None
        return unsettled == 0 or now >= self.phase.deadline

    def next_deadline(self, now: float) -> Optional[float]:
        """The next time :meth:`due`, :meth:`draining` or :meth:`finished` may change
        its answer by the clock alone (while draining, settled batches wake the loop)."""
        times = [self.phase.deadline] if self.phase.deadline is not None else []
        if self.idle_since is not None and not self.ending and not self.draining(now):
            times.append(self.idle_since + self._linger_s)
        return min(times) if times else None
