"""A local, Trubrics-compatible ingestion server ("collector") for development and tests.

Point a client at ``http://127.0.0.1:8000`` instead of the Trubrics cloud and every
batch it publishes is validated like the real API would and stored in SQLite::

    trubrics-mp collect --db events.sqlite3 --port 8000
    trubrics-mp events --db events.sqlite3 --last 20

Standard library only. See ``_http`` for the endpoints and ``_store`` for the schema.
"""

import signal
import sqlite3
import sys
import threading
from types import FrameType
from typing import Any, Callable, Optional, Union

from ._http import (
    DEFAULT_MAX_BODY_BYTES,
    CollectorHandler,
    CollectorServer,
    Response,
    error_response,
    json_response,
    make_server,
)
from ._store import EventStore, StrPath
from ._validate import MAX_BATCH_SIZE, BatchError, validate_batch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SignalHandler = Union[Callable[[int, Optional[FrameType]], Any], int, signal.Handlers, None]


def _say(line: str) -> None:
    print(line, flush=True)


def _install_stop_handlers(stop: threading.Event, received: list[int]) -> dict[int, SignalHandler]:
    """Make SIGTERM/SIGINT set ``stop``; return the previous handlers."""

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        received.append(signum)
        stop.set()

    previous: dict[int, SignalHandler] = {
        signum: signal.getsignal(signum) for signum in STOP_SIGNALS
    }
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    return previous


def _restore_handlers(previous: dict[int, SignalHandler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _wait_for_stop(server: CollectorServer, stop: threading.Event) -> None:
    """Serve in a thread until ``stop`` is set (by a signal) or the server dies."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="trubrics-mp-collector",
        daemon=True,
    )
    thread.start()
    try:
        while thread.is_alive() and not stop.wait(0.2):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _run_until_signalled(server: CollectorServer, store: EventStore, host: str) -> int:
    """Print the listening line, serve until a stop signal, print the closing line."""
    stop = threading.Event()
    received: list[int] = []
    previous = _install_stop_handlers(stop, received)
    try:
        url = f"http://{host}:{server.port}"
        _say(f"trubrics-mp collector listening on {url} (db: {store.path.resolve()})")
        _wait_for_stop(server, stop)
    finally:
        _restore_handlers(previous)
    why = signal.Signals(received[0]).name if received else "server thread ended"
    _say(
        f"trubrics-mp collector stopped ({why}): {store.count_events()} event(s)"
        f" in {store.count_batches()} batch(es)"
    )
    return 0


def serve(
    db_path: StrPath,
    host: str = "127.0.0.1",
    port: int = 8000,
    latency_s: float = 0.0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    handler_class: type[CollectorHandler] = CollectorHandler,
) -> int:
    """Run the collector until SIGTERM or SIGINT; return the exit status.

    The first line printed is ``trubrics-mp collector listening on http://HOST:PORT
    (db: PATH)`` with the real port (so ``port=0`` can be used); the last one says it
    stopped. Returns 1, with a message on stderr, if the database cannot be opened or
    the address cannot be bound. Caveat: must be called from the main thread (it
    installs signal handlers, and restores the previous ones before returning).
    """
    try:
        store = EventStore(db_path)
    except sqlite3.Error as exc:
        print(f"trubrics-mp collector: cannot open {db_path}: {exc}", file=sys.stderr)
        return 1
    try:
        server = make_server(
            store,
            host,
            port,
            latency_s=latency_s,
            max_body_bytes=max_body_bytes,
            handler_class=handler_class,
        )
    except OSError as exc:
        store.close()
        print(f"trubrics-mp collector: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    try:
        return _run_until_signalled(server, store, host)
    finally:
        store.close()


__all__ = [
    "MAX_BATCH_SIZE",
    "BatchError",
    "CollectorHandler",
    "CollectorServer",
    "EventStore",
    "Response",
    "error_response",
    "json_response",
    "make_server",
    "serve",
    "validate_batch",
]
