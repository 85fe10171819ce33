"""uWSGI hooks: a worker's events handed over at its exit; option checks.

Every uWSGI process that makes or inherits the client joins the machine's one
flusher, with or without these hooks, ``lazy-apps`` or a master: the flusher
belongs to no process. What the hooks still give is delivery at a worker's exit
and a warning about options that lose events. Wire them in the module that
creates your client (one line)::

    from trubrics_mp import Trubrics
    from trubrics_mp.integrations import uwsgi as trubrics_uwsgi

    trubrics = trubrics_uwsgi.register(Trubrics(API_KEY))

:func:`register` remembers the client, chains :func:`postfork` into
``uwsgidecorators.postfork`` (or ``uwsgi.post_fork_hook``) and :func:`atexit`
into ``uwsgi.atexit``, and warns once, through the client's logger, about
uWSGI options that would lose events (:func:`check_options`). To wire the
hooks by hand instead, one line each::

    trubrics = trubrics_uwsgi.register(Trubrics(API_KEY), hooks=False)
    uwsgidecorators.postfork(trubrics_uwsgi.postfork)
    trubrics_uwsgi.chain_atexit()

What each hook is for:

- uWSGI forks its workers in C, so Python's at-fork hooks do not run (unless
  ``py-call-osafterfork``); the client's pid check on every call already
  notices the fork. :func:`postfork` only does that work up front.
- The master runs neither ``atexit`` handlers nor ``uwsgi.atexit``; its
  connection closes as it exits (or re-executes itself on a reload), and the
  flusher, once no process has been connected for its linger, delivers what
  it holds and leaves.
- A worker leaving gracefully calls ``uwsgi.atexit``, then tears Python down
  (running ``atexit`` handlers) unless ``skip-atexit-teardown``:
  :func:`atexit` closes the client even then: it hands the worker's locally
  buffered events to the flusher and waits for the worker's events to be
  delivered.

Caveats:

- A worker killed while busy (``harakiri``, a brutal stop ``Q``/SIGINT, an
  exceeded reload mercy) runs no hook: its events already in the shared
  queue are delivered, the few it still buffered (only when the queue was
  full) are lost.
- A worker's exit is a flush: it sends the pipeline's open batches at once,
  so recycling workers often (``max-requests``) can cost a partial batch per exit.
- A graceful reload re-executes the master in place (same pid): the
  re-executed master's client finds the same flusher if it is still
  lingering (``linger``, 5 s by default), else starts the next one; either
  way no idle flusher stays behind.
- Warnings (:func:`check_options`: uWSGI 2.0 without ``die-on-term``;
  ``skip-atexit``) are logged once per process that calls :func:`register`:
  once in all when the master creates the client, once per worker with
  ``lazy-apps``.

The ``uwsgi`` module exists only inside uWSGI; it is imported when a hook
runs, never at import time of this module. Outside uWSGI, :func:`register`
returns the client untouched.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any, Callable, Optional

from .._client import Trubrics

_FALSE = {b"", b"0", b"false", b"no", b"off", "", "0", "false", "no", "off"}


class _State:
    clients: weakref.WeakSet[Trubrics] = weakref.WeakSet()
    warned: set[str] = set()
    atexit_chained = False
    postfork_chained = False


def register(client: Trubrics, *, hooks: bool = True) -> Trubrics:
    """Remember ``client`` for the hooks, wire them, check the options; returns ``client``.

    ``hooks=False``: remember and check only, for wiring :func:`postfork` and
    :func:`atexit` by hand.
    """
    _State.clients.add(client)
    uwsgi = _uwsgi()
    if uwsgi is None:
        client.logger.debug("trubrics_mp: not running under uWSGI; no hooks installed")
        return client
    if hooks:
        chain_postfork()
        chain_atexit()
    for key, message in check_options(uwsgi).items():
        if key not in _State.warned:
            _State.warned.add(key)
            client.logger.warning("trubrics_mp: %s", message)
    return client


def postfork() -> None:
    """``uwsgidecorators.postfork``-style hook: re-initialise the clients in a new worker."""
    for client in list(_State.clients):
        try:
            client.after_fork()  # forget the master's connection now
        except Exception:
            client.logger.exception("trubrics_mp: uWSGI postfork hook failed")


def atexit() -> None:
    """``uwsgi.atexit``-style hook: close the clients (``close()``) of this worker.

    Each hands its buffered events to the flusher and waits, up to the client's
    ``shutdown_timeout``, for this worker's events to be delivered.
    """
    for client in list(_State.clients):
        try:
            client.close(timeout=client.shutdown_timeout)
        except Exception:
            client.logger.exception("trubrics_mp: uWSGI atexit hook failed")


def chain_atexit() -> None:
    """Set ``uwsgi.atexit`` to :func:`atexit`, then whatever hook was there before."""
    uwsgi = _uwsgi()
    if uwsgi is None or _State.atexit_chained:
        return
    _State.atexit_chained = True
    uwsgi.atexit = _chained(atexit, getattr(uwsgi, "atexit", None))


def chain_postfork() -> None:
    """Run :func:`postfork` after each fork, through ``uwsgidecorators`` when present.

    ``uwsgidecorators`` replaces ``uwsgi.post_fork_hook`` when imported, so it
    is registered there; without it (not installed, or refusing to load, as it
    does without a master) the existing hook is chained.
    """
    uwsgi = _uwsgi()
    if uwsgi is None or _State.postfork_chained:
        return
    _State.postfork_chained = True
    try:
        decorators: Any = importlib.import_module("uwsgidecorators")
    except Exception:  # ImportError; without a master, a plain Exception
        uwsgi.post_fork_hook = _chained(postfork, getattr(uwsgi, "post_fork_hook", None))
    else:
        decorators.postfork(postfork)


def check_options(uwsgi: Any = None) -> dict[str, str]:
    """uWSGI settings of this server that would lose events: {key: message}.

    ``uwsgi`` is the ``uwsgi`` module (imported when omitted); outside uWSGI
    the result is empty. Options are read from ``uwsgi.opt`` at call time.
    Several workers without a master need no warning: no worker owns the
    flusher, so the others keep sending to it when the first one exits.
    """
    uwsgi = uwsgi if uwsgi is not None else _uwsgi()
    if uwsgi is None:
        return {}
    opt: dict[str, Any] = dict(getattr(uwsgi, "opt", {}) or {})
    found: dict[str, str] = {}
    if _version(uwsgi) < (2, 1) and not (_flag(opt, "die-on-term") or _flag(opt, "exit-on-reload")):
        found["sigterm-reloads"] = (
            "uWSGI 2.0 reloads instead of stopping on SIGTERM (what docker stop, Kubernetes"
            " and systemd send): the stop then ends in SIGKILL, which in a container or a"
            " systemd service kills the flusher too, with the events it still holds."
            " Set die-on-term = true."
        )
    if _flag(opt, "skip-atexit"):
        found["skip-atexit"] = (
            "skip-atexit is set: a worker recycled by max-requests (or max-worker-lifetime,"
            " reload-on-rss...) runs no exit hook, so the events it still buffers (only when"
            " the flusher lags behind) are lost. Remove skip-atexit."
        )
    return found


# -- helpers -------------------------------------------------------------------------
def _uwsgi() -> Any:
    """The ``uwsgi`` module, or None outside a uWSGI process."""
    try:
        return importlib.import_module("uwsgi")
    except ImportError:
        return None


def _chained(first: Callable[[], None], then: Optional[Callable[[], Any]]) -> Callable[[], None]:
    def hook() -> None:
        try:
            first()
        finally:
            if then is not None:
                then()

    hook.__wrapped__ = first  # type: ignore[attr-defined]
    return hook


def _flag(opt: dict[str, Any], name: str) -> bool:
    value = opt.get(name)
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None or value is False:
        return False
    if value is True:
        return True
    return value.strip().lower() not in _FALSE if isinstance(value, (bytes, str)) else bool(value)


def _version(uwsgi: Any) -> tuple[int, int]:
    raw = getattr(uwsgi, "version", b"")
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (2, 1)  # unknown: assume a current version
