"""The flusher's HTTP side: a :class:`Poster` turns one batch body into one :class:`Outcome`.

The delivery role (``_delivery``) only ever sees this protocol, so it can be
driven in-process by a fake poster, as OpenTelemetry's batch processor is by
a fake exporter. :class:`RequestsPoster` is the real one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from typing import Optional, Protocol
from urllib.parse import urljoin

import requests

from ._config import Config
from ._deadline import Deadline, DeadlineAdapter, Resolver, Watchdog
from ._redact import redact
from ._retry import Outcome
from ._route import Route

MAX_BODY_READ = 65_536  # bytes of an answer's body read at most
DETAIL_CHARS = 300


class Poster(Protocol):
    """POSTs a batch body to an endpoint of the API; safe to call from several threads."""

    def post(self, endpoint: str, body: bytes, route: Optional[Route] = None) -> Outcome:
        """One attempt to the route's host with its key (None: the flusher's own);
        never raises: a failure is an :class:`Outcome` without status."""

    def close(self) -> None:
        """Release connections; no ``post`` follows."""


class RequestsPoster:
    """One keep-alive ``requests`` session for every sender thread.

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
        self._session = _make_session(config)
        self._proxies: dict[str, dict[str, str]] = {}  # per host, read once (see _make_session)
        self._watchdog = Watchdog()
        self._resolver = Resolver()

    def post(self, endpoint: str, body: bytes, route: Optional[Route] = None) -> Outcome:
        route = route or self._default
        url = route.url(endpoint)
        timeout_s = self._config.request_timeout_s
        response: Optional[requests.Response] = None
        with Deadline(self._watchdog, self._resolver, timeout_s) as deadline:
            try:
                response = self._session.post(
                    url,
                    data=body,
                    headers={"x-api-key": route.api_key},
                    proxies=self._proxies_for(route.host),
                    timeout=timeout_s,
                    allow_redirects=False,
                    stream=True,
                )
                outcome = _outcome(url, response)
            except Exception as exc:  # never let a sender thread die
                outcome = self._failed(url, exc, deadline, route)
        if response is not None:  # after the deadline let go of its connection
            with contextlib.suppress(Exception):
                response.close()
        detail = self._scrub(outcome.detail, route)
        return Outcome(outcome.status, outcome.retry_after, detail)

    def _proxies_for(self, host: str) -> dict[str, str]:
        found = self._proxies.get(host)
        if found is None:
            found = self._proxies[host] = dict(requests.utils.get_environ_proxies(host))
        return found

    def close(self) -> None:
        self._session.close()
        self._watchdog.close()

    def _failed(self, url: str, exc: Exception, deadline: Deadline, route: Route) -> Outcome:
        if deadline.passed:
            what = f"no complete answer within request_timeout ({deadline.timeout_s:g} s)"
            return Outcome(None, detail=f"{what}: {type(exc).__name__}")
        if isinstance(exc, requests.RequestException):
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


def _make_session(config: Config) -> requests.Session:
    """A session for ``config.senders`` threads.

    Proxy settings (``HTTPS_PROXY``, ``NO_PROXY``...) are read once per host
    (``RequestsPoster._proxies_for``) instead of on every request
    (``trust_env``, which also looks for a ``.netrc`` file each time): that
    per-request work was a large part of the flusher's CPU. A change to those
    variables needs a new flusher.
    """
    session = requests.Session()
    session.trust_env = False  # proxies are given per request, read once per host
    adapter = DeadlineAdapter(pool_maxsize=config.senders)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Content-Type": "application/json"})  # the key: per request
    return session


def _outcome(url: str, response: requests.Response) -> Outcome:
    """The outcome of an answer whose status line and headers arrived."""
    status = response.status_code
    if 200 <= status <= 299:
        _read_bounded(response)  # to reuse the connection; what it says does not matter
        return Outcome(status)
    if 300 <= status <= 399:
        location = response.headers.get("Location")
        if location is None:
            return Outcome(status, detail="a redirect without a Location header, not followed")
        where = urljoin(url, location)
        return Outcome(
            status, detail=f"redirect to {where} not followed (set host to the API's URL)"
        )
    detail = _error_detail(_read_bounded(response))
    return Outcome(status, retry_after=response.headers.get("Retry-After"), detail=detail)


def _read_bounded(response: requests.Response) -> bytes:
    """Up to ``MAX_BODY_READ`` bytes of the body; whatever arrived if reading fails."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(8192):
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_BODY_READ:
                break
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
