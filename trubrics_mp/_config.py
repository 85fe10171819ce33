"""Validated, immutable client settings (pure: no I/O, no process state).

Every public constructor argument is checked here, once, so that a bad value
fails loudly at construction time instead of silently inside the flusher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Optional
from urllib.parse import urlsplit

from ._address import check_pipeline_name
from ._redact import redact
from ._retry import RetryPolicy

LOGGER_NAME = "trubrics"  # the official SDK's logger name, kept so its configuration applies
MIB = 1024 * 1024
DEFAULT_HOST = "https://app.trubrics.com/api/ingestion"
MAX_FLUSH_AT = 100
MAX_EVENT_BYTES_LIMIT = 131_072  # what one SOCK_SEQPACKET message carries comfortably
RETRY_FOR_S = 300.0  # the default retry budget of a batch, in memory only
SPOOL_RETRY_FOR_S = 86_400.0  # the default with a spool: a day of outage
SPOOL_MAX_BYTES = 256 * MIB

EVENTS_ENDPOINT = "publish_events"
LLM_EVENTS_ENDPOINT = "publish_llm_events"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings shared by the client and its flusher process.

    The field defaults are the public constructor's defaults (``Trubrics``
    reads them from here); field names say their unit.

    ``repr()`` never shows the API key; :meth:`to_wire` is the only place the
    key leaves the object (it goes to the flusher over a private pipe).
    """

    api_key: str = dataclasses.field(repr=False)
    host: str = DEFAULT_HOST
    flush_interval_s: float = 10.0
    flush_at: int = 20
    request_timeout_s: float = 10.0
    max_retries: Optional[int] = None  # None: retries are bounded by retry_for_s only
    retry_for_s: float = RETRY_FOR_S  # a failing batch is retried this long, then dropped
    max_queue_bytes: int = 64 * MIB  # events (their JSON) the flusher holds
    process_buffer_bytes: int = 8 * MIB  # events one process holds while the queue is full
    max_event_bytes: int = 65_536
    shutdown_timeout_s: float = 10.0
    senders: int = 4
    disabled: bool = False
    pipeline: str = "default"  # the name of this machine's pipeline (see _address)
    linger_s: float = 5.0  # the flusher stays this long once no process is connected
    logger_name: str = LOGGER_NAME
    log_level: int = 40
    spool_dir: str = ""  # the disk spool's directory (see _durable); "" for none
    spool_max_bytes: int = SPOOL_MAX_BYTES
    time_scale: float = 1.0  # tests only: retry waits and budgets pass this much faster

    def __post_init__(self) -> None:
        _check_str("api_key", self.api_key)
        _check_host(self.host, self.api_key)
        _check_number("flush_interval", self.flush_interval_s, 1.0, 3600.0)
        _check_int("flush_at", self.flush_at, 1, MAX_FLUSH_AT)
        _check_number("request_timeout", self.request_timeout_s, 0.0, 600.0, low_open=True)
        if self.max_retries is not None:
            _check_int("max_retries", self.max_retries, 0, 1000)
        _check_number("retry_for", self.retry_for_s, 0.0, 7 * 86400.0)
        _check_int("max_queue_bytes", self.max_queue_bytes, MIB, 4096 * MIB)
        _check_int("process_buffer_bytes", self.process_buffer_bytes, 0, 1024 * MIB)
        _check_int("max_event_bytes", self.max_event_bytes, 1_024, MAX_EVENT_BYTES_LIMIT)
        _check_number("shutdown_timeout", self.shutdown_timeout_s, 0.0, 3600.0)
        _check_int("senders", self.senders, 1, 16)
        check_pipeline_name(self.pipeline)
        _check_number("linger", self.linger_s, 0.0, 3600.0)
        if not isinstance(self.spool_dir, str) or "\0" in self.spool_dir:
            raise TypeError("spool_dir must be a path (a str without NUL)")
        _check_int("spool_max_bytes", self.spool_max_bytes, MIB, 1024 * 1024 * MIB)
        _check_number("TRUBRICS_MP_TIME_SCALE", self.time_scale, 1.0, 3600.0)
        if not isinstance(self.disabled, bool):
            raise TypeError(f"disabled must be a bool, got {type(self.disabled).__name__}")

    @property
    def fingerprint(self) -> str:
        """A digest of the flusher-wide settings and of this package's version: the
        same digest, the same flusher. What a flusher applies per client (its
        route: host, key, ``flush_at``, ``flush_interval``) is left out, and so are
        the pipeline's name, its linger and logging."""
        from . import __version__

        shared = dataclasses.replace(
            self,
            api_key="x",
            host=DEFAULT_HOST,
            flush_at=1,
            flush_interval_s=1.0,
            logger_name="",
            log_level=0,
            pipeline="x",
            linger_s=0.0,
            disabled=False,
        )
        text = repr((__version__, dataclasses.astuple(shared)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, retry_for_s=self.retry_for_s)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Config:
        return cls(**data)


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


def _check_host(host: object, api_key: object) -> None:
    """An http(s) URL with a host name; the error never shows the API key.

    When ``api_key`` is a URL the arguments were most likely swapped and
    ``host`` holds the key, so the message says so instead of quoting ``host``;
    otherwise it quotes ``host`` with the key redacted.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a string, got {type(host).__name__}")
    parts = urlsplit(host)
    if parts.scheme in ("http", "https") and parts.netloc:
        return
    expected = f"host must be an http(s) URL such as {DEFAULT_HOST!r}"
    if isinstance(api_key, str) and urlsplit(api_key.strip()).scheme in ("http", "https"):
        raise ValueError(
            f"{expected}, and api_key looks like one: are api_key and host swapped?"
            " (host is not shown: it may be the key)"
        )
    secret = api_key if isinstance(api_key, str) else ""
    raise ValueError(f"{expected}, got {redact(repr(host), secret)}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _check_number(
    name: str, value: object, low: float, high: float, *, low_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    too_low = value <= low if low_open else value < low
    if math.isnan(value) or too_low or value > high:
        bound = "above" if low_open else "at least"
        raise ValueError(f"{name} must be {bound} {low} and at most {high} seconds, got {value}")
