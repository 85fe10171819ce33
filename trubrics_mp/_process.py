"""Small process-level helpers shared by the client and the flusher (Linux)."""

from __future__ import annotations

import ctypes
import os
from typing import Optional

FLUSHER_COMM = "trubrics-flush"  # the flusher's name in ps, top and /proc/PID/comm
_PR_SET_NAME = 15


def set_name(name: str) -> None:
    """Name this process (at most 15 bytes, as ``ps`` shows it); best effort."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux's libc: the name stays the interpreter's


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (a zombie counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_exit(pid: int) -> Optional[int]:
    """A descriptor that becomes readable when ``pid`` exits (a pidfd), or None.

    None means this kernel or Python has no ``pidfd_open``: poll
    :func:`pid_alive` instead. A process already gone gets a descriptor that
    is readable at once.
    """
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        read_fd, write_fd = os.pipe()
        os.close(write_fd)
        return read_fd
    except (AttributeError, OSError):
        return None


def drain_pipe(fd: int) -> None:
    """Read a non-blocking pipe until it is empty."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
