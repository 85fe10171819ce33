"""Starting a flusher process: a fresh interpreter that inherits no app state.

The flusher is started with ``subprocess`` (fork + exec), never with
``multiprocessing``: a forked child that exits normally would otherwise
SIGTERM it through ``multiprocessing.util._exit_function``. The process that
starts it binds the listening socket itself and hands it over, so clients can
connect and queue events before the new interpreter has even imported
anything; binding also serves as the lock that lets only one process restart
a dead flusher. Settings, including the API key, travel over stdin: they
never appear in ``ps``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Optional

from . import _protocol as proto
from ._config import Config

BOOTSTRAP = (
    "import sys,json;boot=json.loads(sys.stdin.readline());sys.path[:]=boot['sys_path'];"
    "from trubrics_mp._flusher import main;main(boot)"
)
PROCESS_TAG = "trubrics-mp-flusher"
_DEFERRED_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class FlusherStartError(RuntimeError):
    """No flusher could be started (no Python interpreter found, or exec failed)."""


def python_executable() -> str:
    """An interpreter of this Python version; under uWSGI ``sys.executable`` is not one."""
    versioned = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    candidates: list[Optional[str]] = []
    if os.path.basename(sys.executable or "").startswith("python"):
        candidates.append(sys.executable)
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_prefix)):
        candidates.append(os.path.join(prefix, "bin", versioned))
    candidates.append(shutil.which(versioned))
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FlusherStartError(f"cannot find a {versioned} interpreter to run the flusher")


def start_flusher(
    config: Config,
    address: bytes,
    owner_pid: int,
    generation: int,
    exec_watch_fd: Optional[int] = None,
) -> subprocess.Popen[bytes]:
    """Bind ``address`` and start a flusher on it.

    ``exec_watch_fd`` is the read end of a close-on-exec pipe whose write end
    the owner keeps: it reaches end of file when the owner replaces its
    program (a uWSGI reload execs the master under the same pid, which a
    pidfd does not see) and every forked child holding it is gone too.
    Raises ``OSError(EADDRINUSE)`` when a flusher already listens there.
    """
    listener = proto.bind_listener(address)
    try:
        boot = {
            "config": config.to_wire(),
            "sys_path": [p for p in sys.path if isinstance(p, str)],
            "listener_fd": listener.fileno(),
            "owner_pid": owner_pid,
            "generation": generation,
            "exec_watch_fd": exec_watch_fd,
        }
        inherited = [listener.fileno()] + ([] if exec_watch_fd is None else [exec_watch_fd])
        process = _popen_with_signals_blocked(inherited)
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(boot).encode() + b"\n")
            process.stdin.close()
        except BrokenPipeError as exc:
            raise FlusherStartError("the flusher exited before reading its settings") from exc
        return process
    finally:
        listener.close()


def _popen_with_signals_blocked(pass_fds: list[int]) -> subprocess.Popen[bytes]:
    """Start the flusher interpreter born with SIGTERM and SIGINT blocked.

    The mask survives exec, so the flusher cannot die of one before its
    handlers are in place; it unblocks them then. Only this thread's mask
    changes, for a moment.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        return subprocess.Popen(
            [python_executable(), "-I", "-c", BOOTSTRAP, PROCESS_TAG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            pass_fds=pass_fds,
            close_fds=True,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
