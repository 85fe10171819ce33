"""Starting a flusher process: a fresh interpreter that inherits no app state.

The flusher is started with ``subprocess`` (fork + exec), never with
``multiprocessing``: a forked child that exits normally would otherwise
SIGTERM it through ``multiprocessing.util._exit_function``. The process that
starts it binds the listening socket itself and hands it over, so clients can
connect and queue events before the new interpreter has even imported
anything. Settings, including the API key, travel over stdin: they never
appear in ``ps``.

The flusher belongs to no client: it is started in a session of its own (so
a host that kills a job's process group, or a Ctrl-C to the terminal's
group, does not reach it), and the interpreter forks once more as soon as it
has read its settings and exits, so the flusher is reparented to init (or the
nearest subreaper) and no client ever has to reap it::

    client --Popen, new session--> bootstrap interpreter --fork--> flusher
              (the client waits              exits at once        (child of init,
               for it: ~10 ms)                                     or a subreaper)
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
    "import sys,json,os;boot=json.loads(sys.stdin.readline());sys.stdin.close()\n"
    "if os.fork():os._exit(0)\n"
    "import site;site.main()\n"  # after the fork (-S): .pth hooks, editable installs
    "sys.path[:]=boot['sys_path'];from trubrics_mp._flusher import main;main(boot)"
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


def start_flusher(config: Config, path: str, generation: int) -> subprocess.Popen[bytes]:
    """Bind ``path`` (the caller holds the start lock) and start a flusher on it.

    Returns the bootstrap process, which exits as soon as the flusher is
    forked: the caller reaps it (:meth:`subprocess.Popen.poll`) on a later call.
    """
    listener = proto.bind_listener(path)
    try:
        boot = {
            "config": config.to_wire(),
            "sys_path": [p for p in sys.path if isinstance(p, str)],
            "listener_fd": listener.fileno(),
            "socket_path": path,
            "socket_inode": os.stat(path).st_ino,
            "generation": generation,
        }
        process = _popen_with_signals_blocked([listener.fileno()], config.pipeline)
        assert process.stdin is not None
        try:
            process.stdin.write(json.dumps(boot).encode() + b"\n")
            process.stdin.close()
        except BrokenPipeError as exc:
            raise FlusherStartError("the flusher exited before reading its settings") from exc
        return process
    finally:
        listener.close()


def _popen_with_signals_blocked(pass_fds: list[int], pipeline: str) -> subprocess.Popen[bytes]:
    """Start the flusher interpreter born with SIGTERM and SIGINT blocked.

    The mask survives exec, so the flusher cannot die of one before its
    handlers are in place; it unblocks them then. Only this thread's mask
    changes, for a moment.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        return subprocess.Popen(
            # -S: site is imported after the fork (see BOOTSTRAP), so it forks sooner
            [python_executable(), "-I", "-S", "-c", BOOTSTRAP, PROCESS_TAG, pipeline],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            pass_fds=pass_fds,
            close_fds=True,
            start_new_session=True,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
