"""Where a route's batches go: URL, headers and the way out, worked out once per route.

A :class:`Target` is made the first time a route posts to an endpoint and
kept for the flusher's life:

- **direct** (no proxy applies): a keep-alive HTTP/1.1 pool per
  origin (scheme, host, port), shared by every route and sender thread
  there (``_direct``). Its connections join the request's deadline.
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
import ssl
import threading
from collections.abc import Mapping
from typing import Optional, Protocol

import requests
import urllib3

from ._config import Config
from ._deadline import DeadlineAdapter
from ._direct import DirectPool, tls_context
from ._route import Route

USER_AGENT = "trubrics-mp"


@dataclasses.dataclass(frozen=True)
class Target:
    """One route's endpoint: ``pool`` is None when the request goes through a proxy."""

    url: str
    request_path: str  # path and query, as in the request line
    headers: dict[str, str] = dataclasses.field(repr=False)  # the API key is in them
    pool: Optional[DirectPool]
    proxies: dict[str, str]
    head: bytes = dataclasses.field(default=b"", repr=False)  # direct: the request head


class Answer(Protocol):
    """An answer whose status line and headers arrived; ``release`` once done."""

    status: int

    def header(self, name: str) -> Optional[str]: ...

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body; ``b""`` at its end."""

    def release(self) -> None:
        """Let go of the connection: reused if the body was read to its end."""


class Targets:
    """The targets of every route seen, and the pools and session behind them."""

    def __init__(self, config: Config) -> None:
        self._timeout_s = config.request_timeout_s
        self._pool_size = config.senders
        self._ca_bundle = ca_bundle(os.environ)
        self._tls: Optional[ssl.SSLContext] = None  # made for the first https origin
        self._session = _proxy_session(config)
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str, int], DirectPool] = {}
        self._known: dict[tuple[Route, str], Target] = {}

    def get(self, route: Route, endpoint: str) -> Target:
        """The target of ``route`` at ``endpoint``, made on first use.

        Raises ``ValueError`` (not kept: the next call tries again) when the
        route's URL or API key cannot go on the wire.
        """
        found = self._known.get((route, endpoint))
        if found is None:
            with self._lock:
                found = self._known.get((route, endpoint))
                if found is None:
                    found = self._known[(route, endpoint)] = self._make(route, endpoint)
        return found

    def send(self, target: Target, body: bytes) -> Answer:
        """POST ``body``; the answer once its status line and headers are in.

        Raises what the connection raised: no retry, no redirect followed.
        """
        if target.pool is not None:
            return target.pool.post(target.head, body)
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
        return ProxiedAnswer(response)

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
        pool = self._pool(parts)
        head = pool.head(parts.request_uri, headers)  # raises for a key that cannot be sent
        return Target(url, parts.request_uri, headers, pool, {}, head)

    def _pool(self, parts: urllib3.util.Url) -> DirectPool:
        scheme = parts.scheme or "http"
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.host or "", port)
        pool = self._pools.get(origin)
        if pool is None:
            if scheme == "https" and self._tls is None:
                self._tls = tls_context(self._ca_bundle)
            pool = self._pools[origin] = DirectPool(
                scheme, origin[1], port, self._timeout_s, self._pool_size, self._tls
            )
        return pool


class ProxiedAnswer:
    """The answer of a request made through a proxy, by the ``requests`` session."""

    def __init__(self, response: requests.Response) -> None:
        self.status = response.status_code
        self._response = response

    def header(self, name: str) -> Optional[str]:
        return self._response.headers.get(name)

    def read(self, size: int) -> bytes:
        chunk: bytes = self._response.raw.read(size, decode_content=True)
        return chunk

    def release(self) -> None:
        if self._response.raw.isclosed():
            self._response.raw.release_conn()
        else:
            self._response.close()  # bytes of this answer may still come: not reusable


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
