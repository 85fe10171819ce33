"""gunicorn server hooks: one flusher, owned by the master, for every worker.

Wire it in ``gunicorn.conf.py`` (one line per hook)::

    from trubrics_mp.integrations import gunicorn as trubrics_gunicorn

    trubrics_gunicorn.configure("myapp.analytics:trubrics")  # where the client lives
    on_starting = trubrics_gunicorn.on_starting
    worker_exit = trubrics_gunicorn.worker_exit
    on_exit = trubrics_gunicorn.on_exit

- :func:`on_starting` (master, once) imports the module that creates your
  ``Trubrics`` client, so the master owns the one flusher process before any
  worker is forked; workers that import the same module (``preload_app`` on
  or off) inherit that client and send to that flusher.
- :func:`worker_exit` (each worker, on its way out) hands the worker's few
  locally buffered events to the flusher, bounded by ``graceful_timeout``.
- :func:`on_exit` (master, last) delivers everything and stops the flusher.

Caveats:

- Without :func:`on_starting` and with ``preload_app = False``, each worker
  creates its own client and so its own flusher: nothing is lost (each
  worker's exit delivers its flusher's events) but batches are not shared.
- The master imports your analytics module once: a SIGHUP reload starts new
  workers on the same client and flusher, so a change to the client's
  settings needs a full restart, not a reload.
- The module named in :func:`configure` should be small (create the client,
  little else): with ``preload_app = False`` it is the one part of your code
  the master imports.
- If your config file already defines one of these hooks, call ours from it.
- ``post_fork`` and ``child_exit`` are not needed: gunicorn forks with
  ``os.fork()``, whose at-fork hook the client uses, and the flusher is not a
  worker, so gunicorn reaping it (``waitpid(-1)``) is harmless.

Nothing here imports gunicorn: the hooks only use the ``server`` and
``worker`` objects gunicorn passes in.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Optional, Union

from .._client import Trubrics

Target = Union[str, Callable[[], Trubrics]]

_DEFAULT_GRACEFUL_TIMEOUT_S = 30.0


class _State:
    target: Optional[Target] = None
    client: Optional[Trubrics] = None
    master_pid: Optional[int] = None


def configure(target: Target) -> None:
    """Say where the application's client comes from; call it in ``gunicorn.conf.py``.

    ``target`` is ``"package.module:attribute"`` (the module is imported and
    the attribute read), ``"package.module"`` (imported; the first
    ``Trubrics`` instance among its globals is used) or a callable returning
    the client. Nothing is imported until :func:`on_starting` runs. Calling
    it again (gunicorn re-reads its config file on SIGHUP) keeps the client
    already made.
    """
    if not (isinstance(target, str) and target.strip()) and not callable(target):
        raise TypeError("target must be 'module:attribute', 'module' or a callable")
    _State.target = target


def on_starting(server: Any) -> None:
    """gunicorn ``on_starting`` hook (master): create the client and its flusher now."""
    if _State.client is not None and _State.master_pid == os.getpid():
        return  # already done by this master
    if _State.target is None:
        raise RuntimeError(
            "trubrics_mp: call trubrics_mp.integrations.gunicorn.configure(...) "
            "in gunicorn.conf.py before using its hooks"
        )
    _State.client = _resolve(_State.target)
    _State.master_pid = os.getpid()
    if _State.client.disabled:
        server.log.info("trubrics_mp: the client is disabled: no flusher, nothing is sent")
        return
    stats = _State.client.stats()
    if stats.flusher_pid is None:
        server.log.warning("trubrics_mp: the flusher did not answer at start-up")
    else:
        server.log.info(
            "trubrics_mp: flusher pid %d serves every worker of master %d",
            stats.flusher_pid,
            os.getpid(),
        )


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn ``worker_exit`` hook: hand this worker's buffered events to the flusher.

    gunicorn also calls this hook in the master for a worker that is already
    gone; there it does nothing.
    """
    client = _State.client
    if client is None or getattr(worker, "pid", None) != os.getpid():
        return
    timeout = _graceful_timeout(server)
    ok = client.close(timeout=min(client.shutdown_timeout, timeout))
    server.log.info("trubrics_mp: worker %d handed over its events (ok=%s)", os.getpid(), ok)


def on_exit(server: Any) -> None:
    """gunicorn ``on_exit`` hook (master): deliver everything, then stop the flusher."""
    client = _State.client
    if client is None or _State.master_pid != os.getpid():
        return
    ok = client.close(timeout=client.shutdown_timeout)
    if ok:
        server.log.info("trubrics_mp: every event was delivered; the flusher stopped")
    else:
        server.log.error("trubrics_mp: some events were not delivered (see client.stats())")


def _graceful_timeout(server: Any) -> float:
    cfg = getattr(server, "cfg", None)
    value = getattr(cfg, "graceful_timeout", _DEFAULT_GRACEFUL_TIMEOUT_S)
    return float(value) if isinstance(value, (int, float)) else _DEFAULT_GRACEFUL_TIMEOUT_S


def _resolve(target: Target) -> Trubrics:
    if not isinstance(target, str):
        return _checked(target(), repr(target))
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name.strip())
    if attribute:
        return _checked(getattr(module, attribute.strip()), target)
    for value in vars(module).values():
        if isinstance(value, Trubrics):
            return value
    raise LookupError(f"trubrics_mp: no Trubrics client among the globals of {module_name!r}")


def _checked(value: object, where: str) -> Trubrics:
    if not isinstance(value, Trubrics):
        raise TypeError(f"trubrics_mp: {where} is a {type(value).__name__}, not a Trubrics client")
    return value
