"""Where a pipeline's flusher listens: a socket in a directory only this user can enter.

Every process of one user on one machine (or container) that makes a client
with the same pipeline name and delivery settings finds the same socket:
``<runtime dir>/<pipeline>-<settings digest>.sock``. The runtime directory is,
in order:

- ``$TRUBRICS_MP_RUNTIME_DIR`` (tests, or to share one directory on purpose);
- ``$XDG_RUNTIME_DIR/trubrics-mp`` (systemd's per-user ``/run/user/<uid>``);
- ``<temp dir>/trubrics-mp-<uid>``.

The directory is made with mode 0700 and checked each time a client is made:
it must be a real directory (not a symbolic link) owned by this user, with no
access for anyone else; otherwise :class:`PipelineDirError` says why. Unlike
a name in Linux's abstract namespace (listed to every user in
``/proc/net/unix``, and free for anyone to bind once a flusher dies), a socket
in such a directory cannot be reached or taken by another user. Both ends
still check the peer's uid.

A lock file beside the socket serialises starts: the process that finds no
flusher takes the lock, looks again, and only then removes a stale socket
and binds a new one. The lock file also keeps the pipeline's generation (the
number of flushers started before the current one).

Environment variables are read when a client is made, never at import.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from typing import Optional

DEFAULT_PIPELINE = "default"
PIPELINE_ENV = "TRUBRICS_MP_PIPELINE"
RUNTIME_DIR_ENV = "TRUBRICS_MP_RUNTIME_DIR"
SPOOL_DIR_ENV = "TRUBRICS_MP_SPOOL_DIR"  # the disk spool's directory (read by the client)
TIME_SCALE_ENV = "TRUBRICS_MP_TIME_SCALE"  # tests only (read by the client, see _config)
LINGER_ENV = "TRUBRICS_MP_LINGER"  # seconds (read by the client, see _config.linger_s)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_PATH_BYTES = 107  # sun_path holds 108 bytes with its terminating NUL


class PipelineDirError(OSError):
    """The runtime directory is unsafe or unusable; the message says what to fix."""


def check_pipeline_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            "pipeline must be 1 to 64 letters, digits, '_', '.' or '-' (starting with a "
            f"letter or digit), got {name!r}"
        )
    return name


def runtime_dir(environ: Mapping[str, str]) -> str:
    """The directory for this user's sockets (made private if missing), checked."""
    chosen = environ.get(RUNTIME_DIR_ENV)
    if chosen:
        path = chosen
    elif environ.get("XDG_RUNTIME_DIR") and os.path.isdir(environ["XDG_RUNTIME_DIR"]):
        path = os.path.join(environ["XDG_RUNTIME_DIR"], "trubrics-mp")
    else:
        path = os.path.join(tempfile.gettempdir(), f"trubrics-mp-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        message = f"cannot make the pipeline directory {path}: {exc}"
        raise PipelineDirError(exc.errno, message) from None
    check_private(path)
    return path


def check_private(path: str) -> None:
    """Raise :class:`PipelineDirError` unless ``path`` is a directory only we can use."""
    info = os.lstat(path)
    problem = None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (a symbolic link is refused)"
    elif info.st_uid != os.getuid():
        problem = f"belongs to uid {info.st_uid}, not to us (uid {os.getuid()})"
    elif info.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):o}: others may enter it (want 700)"
    if problem is not None:
        raise PipelineDirError(
            errno.EACCES,
            f"the pipeline directory {path} {problem}; remove it, or point "
            f"{RUNTIME_DIR_ENV} to a private directory",
        )


def socket_path(directory: str, pipeline: str, digest: str) -> str:
    """The socket of pipeline ``pipeline`` for settings ``digest``."""
    path = os.path.join(directory, f"{pipeline}-{digest[:12]}.sock")
    if len(os.fsencode(path)) > _MAX_PATH_BYTES:
        raise PipelineDirError(
            errno.ENAMETOOLONG,
            f"the socket path {path} is longer than {_MAX_PATH_BYTES} bytes; "
            f"point {RUNTIME_DIR_ENV} to a shorter directory",
        )
    return path


def lock_path(socket: str) -> str:
    return socket[: -len(".sock")] + ".lock"


@contextlib.contextmanager
def start_lock(socket: str) -> Iterator[Optional[int]]:
    """Hold the pipeline's start lock without waiting; yield its descriptor, or None
    when another process holds it (it is starting a flusher)."""
    fd = os.open(lock_path(socket), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)  # releases the lock


def next_generation(lock_fd: int) -> int:
    """The generation of the flusher about to start (read and advanced under the lock)."""
    os.lseek(lock_fd, 0, os.SEEK_SET)
    text = os.read(lock_fd, 32).decode("ascii", "replace").strip()
    generation = int(text) if text.isdigit() else 0
    os.lseek(lock_fd, 0, os.SEEK_SET)
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, b"%d\n" % (generation + 1))
    return generation


def remove_if_ours(socket: str, inode: int) -> None:
    """Remove the socket a leaving flusher bound, unless it was replaced meanwhile.

    Under the start lock; when another process holds it, that process is
    starting a flusher and replaces the stale socket itself.
    """
    try:
        with start_lock(socket) as lock_fd:
            if lock_fd is not None and os.stat(socket).st_ino == inode:
                os.unlink(socket)
    except OSError:
        pass  # gone already, or the directory went away: nothing to remove
