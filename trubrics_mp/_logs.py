"""The flusher's log records, delivered to the application's own logger.

The flusher is a separate interpreter, so its records would otherwise reach
only its stderr. Instead each record travels, as one ``R`` message, to one
application process of the pipeline (the *log sink*: the oldest connection
that declared its logging preferences), which hands it to the client's logger
on its next call (``track``, ``flush``, ``stats``, ``close``): the
application's handlers, formatters and filters see it, with the flusher's pid
on the record. No thread is started in application processes for this.

Client processes declare their logger's effective level (a ``V`` message) on
their first call and then whenever it changed, checked at most every
:data:`LEVEL_CHECK_S` seconds, so a level set after construction reaches the
flusher with the first call made after that delay.

Caveats: a record the sink cannot take at once (its socket buffer full, or no
application process connected) is written to the flusher's stderr instead; a
record waits in the sink's socket until that process makes a call.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable, Optional, Union

from . import _protocol as proto

LEVEL_CHECK_S = 0.25  # how often a client looks at its logger's level, at the most
MAX_MESSAGE_CHARS = 16_384
FLUSHER_PROCESS_NAME = "trubrics-mp-flusher"
AnyLogger = Union[logging.Logger, "logging.LoggerAdapter[logging.Logger]"]


def underlying(logger: AnyLogger) -> logging.Logger:
    """The ``logging.Logger`` behind ``logger`` (a ``LoggerAdapter`` wraps one)."""
    while isinstance(logger, logging.LoggerAdapter):
        logger = logger.logger
    return logger


# -- the wire form of a record ---------------------------------------------------------
def record_to_wire(record: logging.LogRecord) -> bytes:
    text = record.getMessage()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    data = {
        "name": record.name,
        "levelno": record.levelno,
        "levelname": record.levelname,
        "msg": text[:MAX_MESSAGE_CHARS],
        "created": record.created,
        "process": record.process,
        "processName": FLUSHER_PROCESS_NAME,
        "threadName": record.threadName,
        "pathname": record.pathname,
        "filename": record.filename,
        "module": record.module,
        "lineno": record.lineno,
        "funcName": record.funcName,
        "exc_text": (record.exc_text or "")[:MAX_MESSAGE_CHARS] or None,
    }
    return json.dumps(data).encode()


def record_from_wire(body: bytes) -> logging.LogRecord:
    """A LogRecord as the flusher made it (``args`` already merged into ``msg``)."""
    data: dict[str, Any] = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("msg"), str):
        raise ValueError("not a log record")
    data["args"] = None
    record = logging.makeLogRecord(data)
    record.msecs = (record.created - int(record.created)) * 1000
    return record


# -- flusher side ----------------------------------------------------------------------
Sink = Callable[[bytes], bool]  # sends one R message; False if it could not


class ForwardingHandler(logging.Handler):
    """Sends each record to the log sink; falls back to ``fallback`` (stderr)."""

    def __init__(self, fallback: logging.Handler) -> None:
        super().__init__()
        self.fallback = fallback
        self._sinks: list[tuple[object, Sink]] = []  # oldest first

    def declare(self, peer: object, sink: Sink) -> None:
        """``peer`` takes records (if no older peer does); thread-safe."""
        self.acquire()
        try:
            if all(known is not peer for known, _ in self._sinks):
                self._sinks.append((peer, sink))
        finally:
            self.release()

    def forget(self, peer: object) -> None:
        self.acquire()
        try:
            self._sinks = [(known, s) for known, s in self._sinks if known is not peer]
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = proto.record(record_to_wire(record))
        except Exception:
            self.handleError(record)
            return
        for _peer, sink in self._sinks:
            if sink(message):
                return
        self.fallback.handle(record)


def setup_flusher_logging(name: str, level: int) -> ForwardingHandler:
    """The flusher's logger: records go to the sink, else to stderr."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(
        logging.Formatter("%(asctime)s %(name)s %(levelname)s [flusher %(process)d] %(message)s")
    )
    handler = ForwardingHandler(stderr)
    logger.addHandler(handler)
    logger.propagate = False
    return handler


# -- client side -----------------------------------------------------------------------
def replay(logger: AnyLogger, body: bytes) -> None:
    """Hand a record from the flusher to the application's logger (never raises)."""
    target = underlying(logger)
    try:
        record = record_from_wire(body)
    except ValueError:
        return
    if target.isEnabledFor(record.levelno):
        target.handle(record)


def effective_level(logger: AnyLogger) -> int:
    return underlying(logger).getEffectiveLevel()


def declared_level(body: bytes) -> Optional[int]:
    """The level in a ``V`` message's body, or None if it is not one."""
    return int(body) if body.isdigit() else None
