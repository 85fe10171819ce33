"""gunicorn server hooks: the flusher started before the workers, and their exit bounded.

Every worker joins the machine's one flusher without any hook, with
``preload_app`` on or off: the flusher belongs to no process. The hooks are
optional; wire them in ``gunicorn.conf.py`` (one line each)::

    from trubrics_mp.integrations import gunicorn as trubrics_gunicorn

    trubrics_gunicorn.configure("myapp.analytics:trubrics")  # where the client lives
    on_starting = trubrics_gunicorn.on_starting
    worker_exit = trubrics_gunicorn.worker_exit

- :func:`on_starting` (master, once) imports the module that creates your
  ``Trubrics`` client, so the master starts the flusher (or joins it) before
  any worker is forked and stays connected to it until it exits: the flusher
  then never lingers out between worker generations (a SIGHUP reload, workers
  recycled together). Workers that import the same module (``preload_app``
  on or off) inherit that client.
- :func:`worker_exit` (each worker, on its way out) closes the worker's
  client: its buffered events are handed over and delivered, within
  ``min(shutdown_timeout, graceful_timeout)`` (the client's own ``atexit``
  handler waits up to ``shutdown_timeout``, which may outlast gunicorn's
  patience).
- :func:`on_exit` (master, last) closes the master's client, as its ``atexit``
  handler would anyway; kept for configuration files that wire it. Nobody
  stops the flusher: it leaves once no process has been connected for its
  linger.

Caveats:

- A worker's ``close()`` is a flush: it sends the batches still filling at
  once, so workers recycled often (``max_requests``) cost a partial batch per
  exit.
- With :func:`on_starting`, the master imports your analytics module once: a
  SIGHUP reload starts new workers on the same client, so a change to the
  client's settings needs a full restart, not a reload.
- The module named in :func:`configure` should be small (create the client,
  little else): with ``preload_app = False`` it is the one part of your code
  the master imports.
- If your config file already defines one of these hooks, call ours from it.
- ``post_fork`` and ``child_exit`` are not needed: gunicorn forks with
  ``os.fork()``, whose at-fork hook the client uses, and the flusher is no
  child of gunicorn (only its short-lived starter is, which gunicorn may reap).

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
    """gunicorn ``on_starting`` hook (master): create the client, joining the flusher now."""
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
    """gunicorn ``worker_exit`` hook: close this worker's client within ``graceful_timeout``.

    gunicorn also calls this hook in the master for a worker that is already
    gone; there it does nothing.
    """
    client = _State.client
    if client is None or getattr(worker, "pid", None) != os.getpid():
        return
    timeout = _graceful_timeout(server)
    ok = client.close(timeout=min(client.shutdown_timeout, timeout))
    server.log.info("trubrics_mp: worker %d closed its client (ok=%s)", os.getpid(), ok)


def on_exit(server: Any) -> None:
    """gunicorn ``on_exit`` hook (master): close the master's client now.

    The client's ``atexit`` handler does the same when the master exits; the
    flusher is not stopped (it leaves by itself once idle).
    """
    client = _State.client
    if client is None or _State.master_pid != os.getpid():
        return
    if not client.close(timeout=client.shutdown_timeout):
        server.log.error("trubrics_mp: some of the master's events were not delivered")


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
