"""The spool directory: the checks before use, its lock, and reading it back.

``prepare`` makes the directory (mode 0700) when missing and refuses, with
:class:`SpoolUnavailable` and a ``reason``, one that cannot be used safely;
``take_lock`` takes the directory's lock (``flock(LOCK_EX | LOCK_NB)`` on its
``lock`` file: the kernel drops it with the process, however it dies, so a
SIGKILLed flusher's successor takes over at once).

The checks that depend on who runs them go through :class:`Hooks`
(``geteuid``, ``writable``), so that tests running as root, whom neither
file modes nor ownership stop, can still check the refusals.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import stat
import time
from typing import Callable, Optional

from ._spool_format import LOCK_NAME

READ_ONLY, FOREIGN_OWNER, BUSY = "read_only", "foreign_owner", "busy"
NOT_A_DIRECTORY, OPEN_TO_OTHERS, MISSING, OS_ERROR = (
    "not_a_directory",
    "open_to_others",
    "missing",
    "os_error",
)
_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class SpoolUnavailable(OSError):
    """The spool directory cannot be used; ``reason`` says why in one word.

    Reasons: ``not_a_directory``, ``foreign_owner`` (owned by another user),
    ``open_to_others`` (group or others may write to it: they could plant
    events that would be sent with this user's key), ``read_only``, ``busy``
    (a live process holds its lock), ``missing`` (only when inspecting),
    ``os_error`` (any other failure, ``errno`` set).
    """

    def __init__(self, reason: str, directory: str, detail: str, err: int = 0) -> None:
        super().__init__(f"spool directory {directory!r} is unusable ({reason}): {detail}")
        self.errno = err or None
        self.reason = reason
        self.directory = directory


def _refusal(directory: str, what: str, exc: OSError) -> SpoolUnavailable:
    reason = READ_ONLY if exc.errno in _READ_ONLY_ERRNOS else OS_ERROR
    return SpoolUnavailable(reason, directory, f"{what}: {exc}", exc.errno or 0)


def directory_writable(path: str) -> bool:
    """Whether this process may create files in ``path`` (mount flags, then permissions)."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return False
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK | os.X_OK, effective_ids=effective)


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What the spool asks the system, replaceable in tests."""

    geteuid: Callable[[], int] = os.geteuid
    writable: Callable[[str], bool] = directory_writable
    write: Callable[[int, memoryview], int] = os.write
    fsync: Callable[[int], None] = os.fsync
    monotonic: Callable[[], float] = time.monotonic


def prepare(directory: str, hooks: Hooks) -> None:
    """Make ``directory`` if missing; raise :class:`SpoolUnavailable` if it is unusable."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise SpoolUnavailable(NOT_A_DIRECTORY, directory, "it is not a directory") from exc
    except OSError as exc:
        reason = READ_ONLY if exc.errno in _READ_ONLY_ERRNOS else OS_ERROR
        raise SpoolUnavailable(
            reason, directory, f"cannot create it: {exc}", exc.errno or 0
        ) from exc
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise SpoolUnavailable(NOT_A_DIRECTORY, directory, "it is not a directory")
    euid = hooks.geteuid()
    if info.st_uid != euid:
        detail = f"owned by uid {info.st_uid}, this process runs as uid {euid}"
        raise SpoolUnavailable(FOREIGN_OWNER, directory, detail)
    if info.st_mode & 0o022:
        detail = f"mode {stat.S_IMODE(info.st_mode):o} lets others write there; chmod 700 it"
        raise SpoolUnavailable(OPEN_TO_OTHERS, directory, detail)
    if not hooks.writable(directory):
        raise SpoolUnavailable(READ_ONLY, directory, "this process cannot write to it")


def lock_holder_pid(directory: str) -> Optional[int]:
    """The pid the lock's last holder wrote in the lock file, if readable."""
    try:
        with open(os.path.join(directory, LOCK_NAME), "rb") as file:
            return int(file.read(32).strip() or b"x")
    except (OSError, ValueError):
        return None


def take_lock(directory: str) -> int:
    """The directory's lock, held through the returned descriptor; ``busy`` if taken."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        reason = READ_ONLY if exc.errno in _READ_ONLY_ERRNOS else OS_ERROR
        raise SpoolUnavailable(
            reason, directory, f"cannot open {path}: {exc}", exc.errno or 0
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        holder = lock_holder_pid(directory)
        who = f"process {holder}" if holder else "another process"
        detail = f"{who} holds its lock (another flusher uses this spool)"
        raise SpoolUnavailable(BUSY, directory, detail, errno.EWOULDBLOCK) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    except OSError:
        pass  # the pid is only for humans (``spool status``)
    return fd


def is_locked(directory: str) -> bool:
    """Whether a live process holds the directory's lock (probed without waiting).

    The probe holds a shared lock for a few microseconds: a spool opened in
    that instant is refused as ``busy``.
    """
    try:
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
