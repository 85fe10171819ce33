"""Celery signal handlers: the client made in the main worker process, closed at each exit.

Every process of a worker that makes or inherits the client joins the machine's
one flusher, with or without these handlers: the flusher belongs to no process.
What the handlers still give is delivery at exit: billiard ends its pool
processes with ``os._exit``, which skips ``atexit``. Wire them with one line in
the module that defines the Celery app (or the tasks)::

    from trubrics_mp import Trubrics
    from trubrics_mp.integrations.celery import setup

    trubrics = setup(lambda: Trubrics(api_key=..., host=...))

    @app.task
    def work(user_id):
        trubrics.client.track(user_id=user_id, event="Task done")

``setup`` connects three handlers, each shaped like a Celery signal receiver
``(sender=None, **kwargs)``, to Celery's signals (``weak=False``):

- ``worker_init`` (main worker process, before the pool starts): creates the
  client there, so the flusher is running before the pool starts, every
  prefork child inherits the client, and the main process stays connected
  while children come and go (the flusher never lingers out between them).
- ``worker_process_shutdown`` (each prefork child, just before billiard ends
  it with ``os._exit``, which skips ``atexit``): ``close()``, which hands the
  child's local buffer to the flusher and waits until the child's events are
  delivered, so a warm shutdown ends with the children's events delivered.
- ``worker_shutdown`` (main process, after a warm shutdown stopped the pool):
  ``close()`` of the main process's client (its own events: the threads and
  solo pools track there). It does not stop the flusher, which leaves once
  no process has been connected for its linger.

A client already made at import time can be passed instead of a factory:
``setup(trubrics_client)``. The handlers are also usable one by one, e.g.
``worker_process_shutdown.connect(handle.worker_process_shutdown)``.

Caveats:

- A child whose pool process is killed (hard ``time_limit``, OOM killer,
  ``SIGKILL``) runs no handler: events it had already handed to the queue
  are delivered, those still in its local buffer (only when the flusher
  could not keep up) are lost.
- A child's ``close()`` is a flush: it sends the batches still filling at
  once, so children recycled often (``--max-tasks-per-child``) cost a partial
  batch per exit.
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
SIGNALS = ("worker_init", "worker_process_shutdown", "worker_shutdown")


class CeleryTrubrics:
    """Holds the worker's client and the signal handlers that manage it."""

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
        """The client; made on first use if ``worker_init`` has not made it yet (in a
        pool process, that one joins the same flusher)."""
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    # -- handlers: (sender=None, **kwargs), as Celery calls them --------------------
    def worker_init(self, sender: Any = None, **kwargs: Any) -> None:
        """Main worker process, before the pool starts: make the client here."""
        self._main_pid = os.getpid()
        self.client  # noqa: B018 - creating it is the point

    def worker_process_init(self, sender: Any = None, **kwargs: Any) -> None:
        """A pool process starts: nothing to do (kept for code that connects it).

        An inherited client re-attaches by itself at its first call, and a
        client first made here joins the same flusher.
        """

    def worker_process_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """A prefork child is about to ``os._exit``: deliver its events (``close()``)."""
        self._close()

    def worker_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        """Main process, pool stopped: close its client (the flusher leaves by itself)."""
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
