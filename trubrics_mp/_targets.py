"""Where a route's batches go: URL, headers and the way out, worked out once per route.

A :class:`Target` is made the first time a route posts to an endpoint and
kept for the flusher's life:

- **direct** (no proxy applies): a keep-alive HTTP/1.1 pool per
  origin (scheme, host, port), shared by every route and sender thread
  there (``_direct``). Its connections join the request's deadline.
- **through a proxy** (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` unless
  ``NO_PROXY`` names the host): a ``requests`` session (``_proxied``), which
  knows proxy tunnels, proxy credentials and SOCKS. ``requests`` is imported
  only then: with no proxy variable set, a flusher never loads it.

The proxy variables and the CA bundle (``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE``, else certifi's, as ``requests`` does) are read when the
flusher starts and when a route first posts: a change needs a new flusher.
TLS certificates are always verified.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional, Protocol
from urllib.parse import urlsplit

from ._config import Config
from ._direct import DirectPool, tls_context
from ._route import Route

if TYPE_CHECKING:
    from ._proxied import ProxiedSession

USER_AGENT = "trubrics-mp"
_PLAIN_URL = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]+")  # RFC 3986, no "%"


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
        self._session: Optional[ProxiedSession] = None  # made for the first proxied target
        self._lock = threading.Lock()
        # What a failing attempt raises: a failed attempt, not a bug (grows with a session).
        self.transport_errors: tuple[type[BaseException], ...] = (
            OSError,
            http.client.HTTPException,
        )
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
        assert self._session is not None  # made with the target
        return self._session.post(target.url, body, target.headers, target.proxies)

    def close(self) -> None:
        with self._lock:
            pools, session = list(self._pools.values()), self._session
        for pool in pools:
            pool.close()
        if session is not None:
            session.close()

    def _make(self, route: Route, endpoint: str) -> Target:
        url = route.url(endpoint)
        headers = {
            "Content-Type": "application/json",
            "x-api-key": route.api_key,
            "User-Agent": USER_AGENT,
        }
        proxies = self._proxies(url)
        if proxies:
            return Target(url, url, headers, None, proxies)
        scheme, host, port, path = split_url(url)
        pool = self._pool(scheme, host, port)
        head = pool.head(path, headers)  # raises for a key that cannot be sent
        return Target(url, path, headers, pool, {}, head)

    def _proxies(self, url: str) -> dict[str, str]:
        """The proxies for ``url`` (empty: none); the proxied session made if needed.

        Without a proxy variable for the URL's scheme or ``ALL_PROXY``, nothing
        applies and ``requests`` stays unloaded.
        """
        scheme = url.partition(":")[0].lower()
        if not urllib.request.getproxies().keys() & {scheme, "all"}:
            return {}  # what requests would find too: it reads the same variables
        from . import _proxied  # only here: it imports requests

        proxies = _proxied.proxies_for(url)
        if proxies and self._session is None:
            self._session = _proxied.ProxiedSession(
                self._pool_size, self._timeout_s, self._ca_bundle
            )
            self.transport_errors = (*self.transport_errors, *_proxied.ERRORS)
        return proxies

    def _pool(self, scheme: str, host: str, port: Optional[int]) -> DirectPool:
        port = port or (443 if scheme == "https" else 80)
        origin = (scheme, host, port)
        pool = self._pools.get(origin)
        if pool is None:
            if scheme == "https" and self._tls is None:
                self._tls = tls_context(self._ca_bundle)
            pool = self._pools[origin] = DirectPool(
                scheme, host, port, self._timeout_s, self._pool_size, self._tls
            )
        return pool


def split_url(url: str) -> tuple[str, str, Optional[int], str]:
    """Scheme, host (no brackets), port (None: the default) and request path of ``url``.

    A URL of plain characters (no ``%``, no non-ASCII, no dot segment) is split
    by the standard library; any other is left to urllib3's ``parse_url`` as
    before (IDNA host names, percent-encoding, dot segments removed), which
    imports urllib3 only for such a URL.
    """
    if _PLAIN_URL.fullmatch(url) and "/." not in url:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return parts.scheme or "http", parts.hostname or "", parts.port, path
    import urllib3.util  # only here: a URL the standard library would not encode

    parsed = urllib3.util.parse_url(url)
    host = (parsed.host or "").strip("[]")
    return parsed.scheme or "http", host, parsed.port, parsed.request_uri


def ca_bundle(environ: Mapping[str, str]) -> str:
    """The CA bundle ``requests`` would verify with: its variables, else certifi's."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if environ.get(name):
            return environ[name]
    try:
        import certifi  # what requests.utils.DEFAULT_CA_BUNDLE_PATH is, without requests
    except ImportError:  # a requests repackaged without certifi: ask it
        import requests.utils

        return str(requests.utils.DEFAULT_CA_BUNDLE_PATH)
    return str(certifi.where())
