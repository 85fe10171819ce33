"""The flusher's HTTP side: a :class:`Poster` turns one batch body into one :class:`Outcome`.

The delivery role (``_delivery``) only ever sees this protocol, so it can be
driven in-process by a fake poster, as OpenTelemetry's batch processor is by
a fake exporter. :class:`HttpPoster` is the real one.

Each route becomes a :class:`~trubrics_mp._targets.Target` once (its URL,
headers and way out): a request to a host without a proxy goes straight to
one of the flusher's own keep-alive HTTP/1.1 connections (``_direct``), one
through a proxy through a ``requests`` session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from typing import Optional, Protocol
from urllib.parse import urljoin

from ._config import Config
from ._deadline import Deadline, Resolver, Watchdog
from ._redact import redact
from ._retry import Outcome
from ._route import Route
from ._targets import Answer, Targets

MAX_BODY_READ = 65_536  # bytes of an answer's body read at most
READ_CHUNK = 8_192
DETAIL_CHARS = 300


class Poster(Protocol):
    """POSTs a batch body to an endpoint of the API; safe to call from several threads."""

    def post(self, endpoint: str, body: bytes, route: Optional[Route] = None) -> Outcome:
        """One attempt to the route's host with its key (None: the flusher's own);
        never raises: a failure is an :class:`Outcome` without status."""

    def close(self) -> None:
        """Release connections; no ``post`` follows."""


class HttpPoster:
    """Keep-alive connections shared by every sender thread.

    - ``request_timeout`` bounds the whole attempt, name resolution and a
      slowly dripping answer included (see ``_deadline``).
    - Redirects are never followed: the ``x-api-key`` header goes to the
      configured origin only, and a 3xx comes back as its status with the
      ``Location`` in the detail (the retry policy drops it).
    - A 2xx status line means delivered: the body is read (up to
      ``MAX_BODY_READ`` bytes, so the connection can be reused) and a body that
      cannot be read is ignored. An error body is read up to the same bound.
    - Every detail is returned with the API key redacted.
    """

    def __init__(self, config: Config, logger: logging.Logger) -> None:
        self._config = config
        self._default = Route.of(config)
        self._logger = logger
        self._targets = Targets(config)
        self._watchdog = Watchdog()
        self._resolver = Resolver()

    def post(self, endpoint: str, body: bytes, route: Optional[Route] = None) -> Outcome:
        route = route or self._default
        answer: Optional[Answer] = None
        with Deadline(self._watchdog, self._resolver, self._config.request_timeout_s) as deadline:
            try:
                target = self._targets.get(route, endpoint)
                answer = self._targets.send(target, body)
                outcome = _outcome(target.url, answer)
            except Exception as exc:  # never let a sender thread die
                outcome = self._failed(route.url(endpoint), exc, deadline, route)
        if answer is not None:  # after the deadline let go of its connection
            with contextlib.suppress(Exception):
                answer.release()
        detail = self._scrub(outcome.detail, route)
        return Outcome(outcome.status, outcome.retry_after, detail)

    def close(self) -> None:
        self._targets.close()
        self._watchdog.close()

    def _failed(self, url: str, exc: Exception, deadline: Deadline, route: Route) -> Outcome:
        if deadline.passed:
            what = f"no complete answer within request_timeout ({deadline.timeout_s:g} s)"
            return Outcome(None, detail=f"{what}: {type(exc).__name__}")
        if isinstance(exc, self._targets.transport_errors):  # a failing connection or answer
            return Outcome(None, detail=f"{type(exc).__name__}: {exc}")
        self._logger.error(
            "unexpected error posting to %s:\n%s",
            url,
            self._scrub(
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), route
            ),
        )
        return Outcome(None, detail=repr(exc))

    def _scrub(self, text: str, route: Route) -> str:
        return redact(redact(text, route.api_key), self._config.api_key)


def _outcome(url: str, answer: Answer) -> Outcome:
    """The outcome of an answer whose status line and headers arrived."""
    status = answer.status
    if 200 <= status <= 299:
        _read_bounded(answer)  # to reuse the connection; what it says does not matter
        return Outcome(status)
    if 300 <= status <= 399:
        location = answer.header("Location")
        if location is None:
            return Outcome(status, detail="a redirect without a Location header, not followed")
        where = urljoin(url, location)
        return Outcome(
            status, detail=f"redirect to {where} not followed (set host to the API's URL)"
        )
    detail = _error_detail(_read_bounded(answer))
    return Outcome(status, retry_after=answer.header("Retry-After"), detail=detail)


def _read_bounded(answer: Answer) -> bytes:
    """Up to ``MAX_BODY_READ`` bytes of the body; whatever arrived if reading fails."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < MAX_BODY_READ:
            chunk = answer.read(READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except Exception:  # a cut-off, reset, or timed-out body: keep what came
        pass
    return b"".join(chunks)[:MAX_BODY_READ]


def _error_detail(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text[:DETAIL_CHARS]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:DETAIL_CHARS]
    return str(body)[:DETAIL_CHARS]
