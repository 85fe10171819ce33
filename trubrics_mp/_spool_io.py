"""The spool's writes and syncs: whole writes or a reason, and the fsync policy.

:func:`write_all` writes everything or returns why not (``disk_full`` for
ENOSPC, EDQUOT, EFBIG; ``io_error`` for any other ``OSError``): it never raises.
:class:`Syncer` applies the fsync policy, ``every_s``: ``None`` never syncs,
``0`` syncs each write at once (the caller calls :meth:`Syncer.now`),
``t > 0`` syncs at most every ``t`` seconds: a write syncs every file written
since the last sync once that sync is ``t`` old, and otherwise leaves them
dirty for a later write or for the owner's timer (:meth:`Syncer.due_in`).
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Optional

DISK_FULL, IO_ERROR = "disk_full", "io_error"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def failure_reason(exc: OSError) -> str:
    return DISK_FULL if exc.errno in _FULL_ERRNOS else IO_ERROR


def write_all(write: Callable[[int, memoryview], int], fd: int, data: bytes) -> str:
    """Write all of ``data`` to ``fd`` (looping on short writes); ``""`` or the reason."""
    view = memoryview(data)
    try:
        while view:
            view = view[write(fd, view) :]
    except OSError as exc:
        return failure_reason(exc)
    return ""


def unlink(path: str) -> bool:
    """Remove ``path``; False only if it is still there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def read_file(path: str) -> Optional[bytes]:
    """The whole file, ``None`` if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, max(size, 1 << 16))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


class Syncer:
    """The fsync policy of one spool, and the files written since the last sync."""

    def __init__(
        self,
        every_s: Optional[float],
        fsync: Callable[[int], None],
        monotonic: Callable[[], float],
    ) -> None:
        self.every_s = every_s
        self.failures = 0
        self._fsync = fsync
        self._monotonic = monotonic
        self._dirty: set[int] = set()
        self._synced_at = monotonic()

    @property
    def each_write(self) -> bool:
        return self.every_s == 0

    def now(self, fd: int) -> str:
        """fsync ``fd`` now; ``""`` or ``io_error`` (counted)."""
        try:
            self._fsync(fd)
        except OSError:
            self.failures += 1
            return IO_ERROR
        return ""

    def wrote(self, fd: int) -> None:
        """``fd`` was written (and not synced at once): sync now if the last sync is old."""
        if not self.every_s:
            return
        self._dirty.add(fd)
        if self._monotonic() - self._synced_at >= self.every_s:
            self.sync()

    def forget(self, fd: int) -> bool:
        """Stop tracking ``fd`` (about to be closed); whether it was dirty."""
        dirty = fd in self._dirty
        self._dirty.discard(fd)
        return dirty

    def sync(self) -> bool:
        """fsync every file written since the last sync; False if one failed."""
        dirty, self._dirty = self._dirty, set()
        failures = [fd for fd in sorted(dirty) if self.now(fd)]
        self._synced_at = self._monotonic()
        return not failures

    def due_in(self) -> Optional[float]:
        """Seconds until a sync is due (0: now); ``None``: nothing to sync."""
        if not self._dirty or not self.every_s:
            return None
        return max(0.0, self._synced_at + self.every_s - self._monotonic())

    def directory(self, path: str) -> None:
        """fsync a directory (a file made in it survives a machine crash), unless never."""
        if self.every_s is None:
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            self.failures += 1
            return
        try:
            self.now(fd)
        finally:
            os.close(fd)
