"""The flusher's HTTP side: a :class:`Poster` turns one batch body into one :class:`Outcome`.

The delivery role (``_delivery``) only ever sees this protocol, so it can be
driven in-process by a fake poster, as OpenTelemetry's batch processor is by
a fake exporter. :class:`RequestsPoster` is the real one.
"""

from __future__ import annotations

import logging
from typing import Protocol

import requests

from ._config import Config
from ._retry import Outcome


class Poster(Protocol):
    """POSTs a batch body to an endpoint of the API; safe to call from several threads."""

    def post(self, endpoint: str, body: bytes) -> Outcome:
        """One attempt; never raises: a failure is an :class:`Outcome` without status."""

    def close(self) -> None:
        """Release connections; no ``post`` follows."""


class RequestsPoster:
    """One keep-alive ``requests`` session for every sender thread."""

    def __init__(self, config: Config, logger: logging.Logger) -> None:
        self._config = config
        self._logger = logger
        self._session = _make_session(config)

    def post(self, endpoint: str, body: bytes) -> Outcome:
        url = self._config.endpoint_url(endpoint)
        try:
            response = self._session.post(url, data=body, timeout=self._config.request_timeout_s)
        except requests.RequestException as exc:
            return Outcome(None, detail=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # never let a sender thread die
            self._logger.exception("unexpected error posting to %s", url)
            return Outcome(None, detail=repr(exc))
        return Outcome(
            response.status_code,
            retry_after=response.headers.get("Retry-After"),
            detail="" if response.ok else _error_detail(response),
        )

    def close(self) -> None:
        self._session.close()


def _make_session(config: Config) -> requests.Session:
    """A session for ``config.senders`` threads.

    Proxy settings (``HTTPS_PROXY``, ``NO_PROXY``...) are read once, here,
    instead of on every request (``trust_env``, which also looks for a
    ``.netrc`` file each time): that per-request work was a large part of the
    flusher's CPU. A change to those variables needs a new flusher.
    """
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(config.host))
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=config.senders)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Content-Type": "application/json", "x-api-key": config.api_key})
    return session


def _error_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]
