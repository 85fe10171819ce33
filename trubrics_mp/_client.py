"""The public client: a drop-in ``Trubrics`` that stays correct in forked workers.

Every process that makes a client, or uses one it inherited (a forked child,
or a spawn or forkserver child that received it pickled), opens its own
connection to the machine's flusher for that pipeline (see ``_address``),
starting the flusher if none is running. No process owns the flusher: it
leaves by itself once no process is connected (see ``_lifetime``), and
``close()`` in any process waits only for that process's events.

Fork detection is done twice, as in OpenTelemetry: ``os.register_at_fork``
for Python's own forks, and a pid check on every call for forks made in C
(uWSGI, C extensions), which run no Python hooks.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import time
import weakref
from typing import Any, Callable, Optional, Union

from . import _address
from . import _protocol as proto
from ._address import (
    DEFAULT_PIPELINE,
    LINGER_ENV,
    PIPELINE_ENV,
    SPOOL_DIR_ENV,
    TIME_SCALE_ENV,
)
from ._compat import OfficialAttributes, clamp_like_official
from ._config import DEFAULT_HOST, LOGGER_NAME, RETRY_FOR_S, SPOOL_RETRY_FOR_S, Config
from ._link import Link
from ._logs import AnyLogger, effective_level, underlying
from ._serialize import InvalidEvent, choose_encoder, encode_event, encode_llm_event
from ._stats import Stats, merge
from ._supervisor import Supervisor

_STATS_TIMEOUT_S = 5.0
_EVENT, _LLM_EVENT, _END = proto.EVENT, proto.LLM_EVENT, proto.END  # read on every call
_QUEUED = "Event `%s` by user `%s` has been added to queue."  # 1.8.5's words, at DEBUG


class Trubrics(OfficialAttributes):
    """Send Trubrics events from every process of an application through one flusher.

    The positional order of the arguments is that of the official ``trubrics``
    1.8.5 client; ``flush_at`` (the documented name) and ``flush_batch_size``
    (1.8.5's name) are the same setting. ``flush_periodic_check`` is accepted
    and ignored. Every other setting is keyword-only; see the configuration
    page of the documentation for bounds. Invalid settings raise ``ValueError``
    or ``TypeError`` here; ``track()`` and ``track_llm()`` never raise.

    Public attributes for integrations and tests: :attr:`logger`,
    :attr:`shutdown_timeout`, :attr:`disabled`, :attr:`closed` and
    :meth:`after_fork`.
    """

    def __init__(
        self,
        api_key: str,
        host: str = DEFAULT_HOST,
        flush_interval: float = Config.flush_interval_s,
        flush_batch_size: Optional[int] = None,
        flush_periodic_check: Optional[float] = None,
        logger: Optional[AnyLogger] = None,
        *,
        flush_at: Optional[int] = None,
        request_timeout: float = Config.request_timeout_s,
        max_retries: Optional[int] = Config.max_retries,
        retry_for: Optional[float] = None,
        max_queue_bytes: int = Config.max_queue_bytes,
        process_buffer_bytes: int = Config.process_buffer_bytes,
        max_event_bytes: int = Config.max_event_bytes,
        shutdown_timeout: float = Config.shutdown_timeout_s,
        disabled: bool = False,
        pipeline: Optional[str] = None,
        linger: Optional[float] = None,
        spool_dir: Optional[Union[str, os.PathLike[str]]] = None,
        spool_max_bytes: int = Config.spool_max_bytes,
    ) -> None:
        self.logger: AnyLogger = _checked_logger(logger)
        clamped = clamp_like_official(
            flush_interval, _batch_size(flush_at, flush_batch_size), flush_periodic_check
        )
        for warning in clamped.warnings:
            self.logger.warning("%s", warning)
        spool = _spool_path(_from_env(spool_dir, SPOOL_DIR_ENV, ""))
        config = Config(
            api_key=api_key,
            host=host,
            flush_interval_s=clamped.flush_interval,
            flush_at=clamped.flush_batch_size,
            request_timeout_s=request_timeout,
            max_retries=max_retries,
            retry_for_s=_retry_for(retry_for, spool),
            max_queue_bytes=max_queue_bytes,
            process_buffer_bytes=process_buffer_bytes,
            max_event_bytes=max_event_bytes,
            shutdown_timeout_s=shutdown_timeout,
            disabled=disabled,
            pipeline=_from_env(pipeline, PIPELINE_ENV, DEFAULT_PIPELINE),
            linger_s=_linger(linger),
            time_scale=_number_from_env(TIME_SCALE_ENV, 1.0),
            logger_name=underlying(self.logger).name,
            log_level=effective_level(self.logger),
            spool_dir=spool,
            spool_max_bytes=spool_max_bytes,
        )
        self.flush_periodic_check = clamped.flush_periodic_check
        path = ""
        if not config.disabled:
            directory = _address.runtime_dir(os.environ)
            path = _address.socket_path(directory, config.pipeline, config.fingerprint)
        self._setup(config, path)
        if not config.disabled:
            self._link.connect_now()  # joins the machine's flusher, or starts it

    def _setup(self, config: Config, path: str) -> None:
        self._config = config
        self._encoder = choose_encoder(os.environ)  # orjson when it imports (the fast extra)
        self._pid = os.getpid()
        self._closed = False
        self._said_closed = False
        self.last_flush_time = datetime.datetime.now(datetime.timezone.utc)
        self.is_flushing = False
        self._supervisor = Supervisor(config, path, self.logger)
        self._link = Link(config, self._supervisor, self.logger)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=_call_weak(ref, Trubrics.after_fork))
        # A strong reference: a client nobody holds any more is still closed
        # (its events delivered) at exit, as the official SDK's thread would.
        atexit.register(self._close_at_exit)

    # -- public surface for integrations ----------------------------------------------
    @property
    def shutdown_timeout(self) -> float:
        """Seconds ``close()`` waits at exit for delivery (the constructor's setting)."""
        return self._config.shutdown_timeout_s

    @property
    def disabled(self) -> bool:
        """True when the client sends nothing and starts no flusher."""
        return self._config.disabled

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran in this process."""
        return self._closed

    def after_fork(self) -> None:
        """Re-initialise in a new child process; a no-op in the process that has it.

        Every call runs this check already; hosts that fork in C (uWSGI) may
        call it from their post-fork hook to do the work before the first event.
        The child forgets the parent's connection and buffer, never re-sending it.
        """
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._link.forget_parent()

    # -- pickling: spawn and forkserver children attach to the same flusher -------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "config": self._config.to_wire(),
            "path": self._supervisor.path,
            "flush_periodic_check": self.flush_periodic_check,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        config = Config.from_wire(state["config"])
        self.logger = logging.getLogger(config.logger_name)
        self.flush_periodic_check = state["flush_periodic_check"]
        self._setup(config, state["path"])

    def __repr__(self) -> str:
        return (
            f"Trubrics(host={self._config.host!r}, flush_at={self._config.flush_at}, "
            f"flush_interval={self._config.flush_interval_s}, api_key=<hidden>, "
            f"pipeline={self._config.pipeline!r}, pid={self._pid}, closed={self._closed})"
        )

    def __enter__(self) -> Trubrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the hot path ----------------------------------------------------------------
    def track(
        self,
        user_id: str,
        event: str,
        properties: Optional[dict[str, Any]] = None,
        timestamp: Optional[datetime.datetime] = None,
    ) -> None:
        """Queue one event for ``POST /publish_events``. Never blocks, never raises."""
        try:
            if self._pid != os.getpid():  # _current_link(), inlined: the hot path
                self.after_fork()
            link = self._link
            link.counters.tracked += 1
            data = encode_event(
                user_id, event, properties, timestamp, self._config.max_event_bytes, self._encoder
            )
            if self._send(link, _EVENT + data + _END):
                self.logger.debug(
                    "Event `%s` by user `%s` has been added to queue.", event, user_id
                )
        except InvalidEvent as exc:
            self._reject("track", exc)
        except Exception:
            self.logger.exception("trubrics_mp: internal error in track(); event dropped")

    def track_llm(
        self,
        user_id: str,
        prompt: str,
        generation: str,
        prompt_event_name: str = "Prompt",
        generation_event_name: str = "Generation",
        assistant_id: Optional[str] = None,
        properties: Optional[dict[str, Any]] = None,
        timestamp: Optional[datetime.datetime] = None,
        latency: Optional[float] = None,
        thread_id: Optional[str] = None,
    ) -> None:
        """Queue one prompt/generation pair for ``POST /publish_llm_events``. Never raises."""
        try:
            link = self._current_link()
            link.counters.tracked += 1
            data = encode_llm_event(
                user_id=user_id,
                prompt=prompt,
                generation=generation,
                prompt_event_name=prompt_event_name,
                generation_event_name=generation_event_name,
                assistant_id=assistant_id,
                properties=properties,
                timestamp=timestamp,
                latency=latency,
                thread_id=thread_id,
                max_bytes=self._config.max_event_bytes,
                encoder=self._encoder,
            )
            if self._send(link, _LLM_EVENT + data + _END):
                self.logger.debug("LLM event by user `%s` has been added to queue.", user_id)
        except InvalidEvent as exc:
            self._reject("track_llm", exc)
        except Exception:
            self.logger.exception("trubrics_mp: internal error in track_llm(); event dropped")

    def _current_link(self) -> Link:
        if self._pid != os.getpid():
            self.after_fork()
        return self._link

    def _send(self, link: Link, message: bytes) -> bool:
        """Hand over one event; True if it was (then at DEBUG the caller says so)."""
        if self._closed or self._config.disabled:
            self._refuse(link, "closed" if self._closed else "disabled")
            return False
        link.send(message)
        if time.monotonic() >= link.next_logging_check:  # link.logging_check_due(), inlined
            link.check_logging(effective_level(self.logger))
        return link.debug

    def _refuse(self, link: Link, reason: str) -> None:
        link.reject(reason)
        if reason == "closed" and not self._said_closed:
            self._said_closed = True
            self.logger.warning(
                "trubrics_mp: track() after close(): events are dropped (counted as 'closed')"
            )

    def _reject(self, method: str, exc: InvalidEvent) -> None:
        self._link.reject(exc.reason)
        self._link.limiter.log(
            self.logger,
            logging.ERROR,
            f"invalid:{exc.reason}",
            "trubrics_mp: %s() dropped an invalid event: %s",
            method,
            exc,
        )

    # -- blocking calls ------------------------------------------------------------------
    def flush(self, timeout: Optional[float] = None) -> bool:
        """Block until every batch unsettled in the pipeline now is delivered or dropped.

        The flusher first takes in everything already queued by any process, so
        this waits for other processes' events too, not only this one's (a
        master or main process that tracks nothing waits for its workers'). A
        process not connected (a forked child that never tracked) has nothing
        to wait for. Returns True when nothing this process tracked since its last flush was
        lost (here or in the flusher); False on a loss, when ``timeout``
        (seconds) passes first, or when no flusher answers.
        """
        link = self._current_link()
        if self._config.disabled:
            return True
        self.is_flushing = True
        try:
            if self._closed or (link.sock is None and not link.buffer):
                return link.take_losses() == 0  # not connected: no flusher to wait for
            reply = link.request(proto.FLUSH, _deadline(timeout))
            # Taken after the request: it may find that a flusher died with our events.
            return link.take_losses() == 0 and reply is not None and reply.ok
        finally:
            self.is_flushing = False
            self.last_flush_time = datetime.datetime.now(datetime.timezone.utc)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Wait (until ``timeout`` seconds) for this process's events, then disconnect.

        This is :meth:`flush` followed by closing this process's connection.
        The flusher is not stopped: other processes may still use it, and it
        leaves by itself ``linger`` seconds after the last one disconnected.
        Returns True if nothing this process tracked is known lost (False too
        when ``timeout`` passed first). Calling it again returns True.
        """
        if self._closed:
            return True
        link = self._current_link()
        ok = self.flush(timeout)
        link.disconnect()
        self._supervisor.reap()
        self._closed = True
        atexit.unregister(self._close_at_exit)
        return ok

    def _close_at_exit(self) -> None:
        if not self._closed:
            self.close(timeout=self._config.shutdown_timeout_s)

    def stats(self, flusher: bool = True) -> Stats:
        """Counters of this process and, with ``flusher``, of the whole pipeline.

        ``flusher=False`` reads this process's counters only, without a request
        to the flusher (which waits up to 5 s for an answer).
        """
        link = self._current_link()
        answer = None
        if flusher and not self._config.disabled and not self._closed:
            reply = link.request(proto.STATS, _deadline(_STATS_TIMEOUT_S))
            if reply is not None:
                answer = json.loads(reply.body)
        pipeline = self._supervisor.path
        return merge(link.counters, len(link.buffer), link.generation, pipeline, answer)


def _batch_size(flush_at: Optional[int], flush_batch_size: Optional[int]) -> int:
    if flush_at is not None and flush_batch_size is not None and flush_at != flush_batch_size:
        raise ValueError("flush_at and flush_batch_size are the same setting: give one")
    chosen = flush_at if flush_at is not None else flush_batch_size
    return Config.flush_at if chosen is None else chosen


def _checked_logger(logger: Optional[AnyLogger]) -> AnyLogger:
    """``logger``, or the default one: ``trubrics`` at ERROR unless configured already."""
    if logger is None:
        default = logging.getLogger(LOGGER_NAME)
        if default.level == logging.NOTSET:
            default.setLevel(logging.ERROR)
        return default
    if not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        raise TypeError(
            f"logger must be a logging.Logger or LoggerAdapter, got {type(logger).__name__}"
        )
    return logger


def _linger(linger: Optional[float]) -> float:
    if linger is not None:
        return linger
    return _number_from_env(LINGER_ENV, Config.linger_s)


def _number_from_env(name: str, default: float) -> float:
    """The number in the environment variable ``name`` (read now), else ``default``."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None


def _from_env(value: Optional[Any], name: str, default: Any) -> Any:
    """An argument, else the environment variable ``name`` (read now), else ``default``."""
    if value is not None:
        return value
    return os.environ.get(name) or default


def _spool_path(value: object) -> str:
    """The spool directory as an absolute path ("" for none): the flusher has its
    own working directory."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"spool_dir must be a path, got {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError("spool_dir must be a str path, not bytes")
    return os.path.abspath(path) if path else ""


def _retry_for(retry_for: Optional[float], spool_dir: str) -> float:
    """The retry budget given, else the default: a day with a spool, 5 minutes without."""
    if retry_for is not None:
        return retry_for
    return SPOOL_RETRY_FOR_S if spool_dir else RETRY_FOR_S


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else time.monotonic() + timeout


def _call_weak(
    ref: weakref.ref[Trubrics], method: Callable[[Trubrics], None]
) -> Callable[[], None]:
    def hook() -> None:
        client = ref()
        if client is not None:
            method(client)

    return hook
