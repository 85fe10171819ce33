"""Where a route's batches go: URL, headers and the way out, worked out once per route.

A :class:`Target` is made the first time a route posts to an endpoint and
kept for the flusher's life:

- **direct** (no proxy applies): a keep-alive urllib3 connection pool per
  origin (scheme, host, port), shared by every route and sender thread
  there. Its connections join the request's deadline (``_deadline``).
- **through a proxy** (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` unless
  ``NO_PROXY`` names the host): a ``requests`` session, which knows proxy
  tunnels, proxy credentials and SOCKS; its pools make deadline
  connections too (``DeadlineAdapter``).

The proxy variables and the CA bundle (``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE``, else certifi's, as ``requests`` does) are read when the
flusher starts and when a route first posts: a change needs a new flusher.
TLS certificates are always verified.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from typing import Any, Optional

import requests
import urllib3
from urllib3.connectionpool import HTTPConnectionPool

from ._config import Config
from ._deadline import DeadlineAdapter, DeadlineHTTPPool, DeadlineHTTPSPool
from ._route import Route

USER_AGENT = "trubrics-mp"


@dataclasses.dataclass(frozen=True)
class Target:
    """One route's endpoint: ``pool`` is None when the request goes through a proxy."""

    url: str
    request_path: str  # what the pool is asked for: path and query
    headers: dict[str, str] = dataclasses.field(repr=False)  # the API key is in them
    pool: Optional[HTTPConnectionPool]
    proxies: dict[str, str]


class Targets:
    """The targets of every route seen, and the pools and session behind them."""

    def __init__(self, config: Config) -> None:
        self._timeout_s = config.request_timeout_s
        self._timeout = urllib3.Timeout(connect=self._timeout_s, read=self._timeout_s)
        self._pool_size = config.senders
        self._ca_bundle = ca_bundle(os.environ)
        self._session = _proxy_session(config)
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str, int], HTTPConnectionPool] = {}
        self._known: dict[tuple[Route, str], Target] = {}

    def get(self, route: Route, endpoint: str) -> Target:
        """The target of ``route`` at ``endpoint``, made on first use."""
        found = self._known.get((route, endpoint))
        if found is None:
            with self._lock:
                found = self._known.get((route, endpoint))
                if found is None:
                    found = self._known[(route, endpoint)] = self._make(route, endpoint)
        return found

    def send(self, target: Target, body: bytes) -> Any:
        """POST ``body``; the answer (a urllib3 response) once its status line is in.

        Its body is left to read; the caller releases it. Raises what the
        connection raised: no retry, no redirect followed.
        """
        if target.pool is None:
            response = self._session.post(
                target.url,
                data=body,
                headers=target.headers,
                proxies=target.proxies,
                verify=self._ca_bundle,
                timeout=self._timeout_s,
                allow_redirects=False,
                stream=True,
            )
            return response.raw
        return target.pool.urlopen(
            "POST",
            target.request_path,
            body=body,
            headers=target.headers,
            retries=False,
            redirect=False,
            timeout=self._timeout,
            preload_content=False,
            assert_same_host=False,
        )

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
        self._session.close()

    def _make(self, route: Route, endpoint: str) -> Target:
        url = route.url(endpoint)
        headers = {
            "Content-Type": "application/json",
            "x-api-key": route.api_key,
            "User-Agent": USER_AGENT,
        }
        proxies = dict(requests.utils.get_environ_proxies(url))
        if requests.utils.select_proxy(url, proxies):
            return Target(url, url, headers, None, proxies)
        parts = urllib3.util.parse_url(url)
        return Target(url, parts.request_uri, headers, self._pool(parts), {})

    def _pool(self, parts: urllib3.util.Url) -> HTTPConnectionPool:
        scheme = parts.scheme or "http"
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.host or "", port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = (
                DeadlineHTTPSPool(
                    origin[1],
                    port,
                    maxsize=self._pool_size,
                    block=False,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=self._ca_bundle,
                )
                if scheme == "https"
                else DeadlineHTTPPool(origin[1], port, maxsize=self._pool_size, block=False)
            )
        return pool


def ca_bundle(environ: Mapping[str, str]) -> str:
    """The CA bundle ``requests`` would verify with: its variables, else certifi's."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if environ.get(name):
            return environ[name]
    return str(requests.utils.DEFAULT_CA_BUNDLE_PATH)


def _proxy_session(config: Config) -> requests.Session:
    """A session for the proxied targets of ``config.senders`` threads.

    ``trust_env`` is off (it read the proxy variables and looked for a
    ``.netrc`` file on every request): each target carries its proxies, read once.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = DeadlineAdapter(pool_maxsize=config.senders)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
