"""Celery signal handlers: one flusher, owned by the main worker process, for every pool.

Wire it with one line in the module that defines the Celery app (or the tasks)::

    from trubrics_mp import Trubrics
    from trubrics_mp.integrations.celery import setup

    trubrics = setup(lambda: Trubrics(api_key=..., host=...))

    @app.task
    def work(user_id):
        trubrics.client.track(user_id=user_id, event="Task done")

``setup`` connects four handlers, each shaped like a Celery signal receiver
``(sender=None, **kwargs)``, to Celery's signals (``weak=False``):

- ``worker_init`` (main worker process, before the pool starts): creates the
  client there, so the main process *owns* the flusher and every prefork
  child forked afterwards joins it.
- ``worker_process_init`` (each prefork child, and the main process of the
  solo pool): nothing to do when the client was inherited; logs a warning
  when it was not (see the caveats).
- ``worker_process_shutdown`` (each prefork child, just before billiard ends
  it with ``os._exit``, which skips ``atexit``): ``close()``, which for a
  child only hands its small local buffer to the flusher.
- ``worker_shutdown`` (main process, after a warm shutdown stopped the pool):
  ``close()``, which delivers everything and stops the flusher.

A client already made at import time can be passed instead of a factory:
``setup(trubrics_client)``. The handlers are also usable one by one, e.g.
``worker_process_shutdown.connect(handle.worker_process_shutdown)``.

Caveats:

- A child whose pool process is killed (hard ``time_limit``, OOM killer,
  ``SIGKILL``) runs no handler: events it had already handed to the queue
  are delivered, those still in its local buffer (only when the flusher
  could not keep up) are lost.
- If the client is first used in a prefork child (``setup`` was called after
  ``worker_init``, or in a module only the children import), that child owns
  a flusher that stops when the child is recycled, and the other children
  cannot restart it. A warning is logged when ``setup`` ran in the main
  process too late; a module imported only by children goes unnoticed. Call
  ``setup`` at import time of the app or tasks module, which the main
  process imports.
- Events tracked after ``worker_shutdown`` (a cold shutdown while tasks
  still run) are dropped and counted as ``closed``.
- ``close()`` waits at most ``timeout`` seconds (default: the client's
  ``shutdown_timeout``); a warm shutdown can be that much longer when the
  collector is slow or down.

Celery is imported by :func:`setup` only, never at import time.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Callable, Optional, Union

from .._client import Trubrics
from .._config import LOGGER_NAME

ClientOrFactory = Union[Trubrics, Callable[[], Trubrics]]
SIGNALS = ("worker_init", "worker_process_init", "worker_process_shutdown", "worker_shutdown")


class CeleryTrubrics:
    """Holds the worker's client and the four signal handlers that manage it."""

    def __init__(self, client: ClientOrFactory, *, timeout: Optional[float] = None) -> None:
        if isinstance(client, Trubrics):
            self._client: Optional[Trubrics] = client
            self._factory: Optional[Callable[[], Trubrics]] = None
        elif callable(client):
            self._client = None
            self._factory = client
        else:
            raise TypeError("setup() takes a Trubrics client or a function that makes one")
        self._timeout = timeout
        self._main_pid: Optional[int] = None  # where worker_init ran
        self._log = logging.getLogger(LOGGER_NAME)

    def __repr__(self) -> str:
        return f"CeleryTrubrics(client={self._client!r}, main_pid={self._main_pid})"

    @property
    def client(self) -> Trubrics:
        """The client; made on first use if ``worker_init`` has not made it yet."""
        if self._client is None:
            assert self._factory is not None
            if self._main_pid is not None and os.getpid() != self._main_pid:
                self._warn_child_owner()
            self._client = self._factory()
        return self._client

    # -- handlers: (sender=None, **kwargs), as Celery calls them --------------------
    def worker_init(self, sender: Any = None, **kwargs: Any) -> None:
        """Main worker process, before the pool starts: make the client (owner) here."""
        self._main_pid = os.getpid()
        self.client  # noqa: B018 - creating it is the point

    def worker_process_init(self, sender: Any = None, **kwargs: Any) -> None:
        """A pool process starts: the inherited client joins the flusher by itself."""
        if self._client is None and self._main_pid != os.getpid():
            self._warn_child_owner()

    def worker_process_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """A prefork child is about to ``os._exit``: hand over its local buffer."""
        self._close()

    def worker_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """Main process, pool stopped: deliver everything and stop the flusher."""
        self._close()
        if self._factory is not None and os.getpid() == self._main_pid:
            self._client = None  # a later worker in this process makes a fresh one

    def _close(self) -> None:
        client = self._client
        if client is None:
            return
        timeout = self._timeout
        if timeout is None:
            timeout = client.shutdown_timeout
        if not client.close(timeout=timeout):
            self._log.warning("trubrics_mp: some events were not delivered at worker shutdown")

    def _warn_child_owner(self) -> None:
        self._log.warning(
            "trubrics_mp: the client was not made in the main Celery worker process; "
            "this pool process will own a flusher that stops when it exits. "
            "Call setup() at import time of the app or tasks module."
        )


def setup(client: ClientOrFactory, *, timeout: Optional[float] = None) -> CeleryTrubrics:
    """Connect the handlers to Celery's worker signals and return the holder.

    ``client`` is a function that makes the client (called in the main worker
    process at ``worker_init``) or a client already made there at import time.
    ``timeout`` bounds each ``close()`` at shutdown (default: the client's
    ``shutdown_timeout``). Imports ``celery``.
    """
    handle = CeleryTrubrics(client, timeout=timeout)
    signals = importlib.import_module("celery.signals")
    for name in SIGNALS:
        getattr(signals, name).connect(getattr(handle, name), weak=False)
    return handle
