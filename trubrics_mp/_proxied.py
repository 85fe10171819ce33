"""Requests through a proxy: a ``requests`` session, imported only when one is used.

A flusher whose hosts need no proxy never imports ``requests`` (nor urllib3):
about 10 MB of resident memory saved. The first route that a proxy variable
(``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, unless ``NO_PROXY`` names the
host) sends through a proxy imports this module (see ``_targets``). Its
session knows proxy tunnels, proxy credentials and SOCKS; its pools make
connections that join the request's :class:`~trubrics_mp._deadline.Deadline`
(``DeadlineAdapter``), except through SOCKS (urllib3's own connections, which
keep the per-operation timeouts only).
"""

from __future__ import annotations

import socket
from typing import Any, Optional

import requests
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ._deadline import Deadline, connect_within, current_deadline

# What a proxied request raises besides OSError and http.client's errors: a failed attempt.
ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)


def proxies_for(url: str) -> dict[str, str]:
    """The proxies ``requests`` would use for ``url`` (empty: none applies), read now."""
    proxies = dict(requests.utils.get_environ_proxies(url))
    return proxies if requests.utils.select_proxy(url, proxies) else {}


class ProxiedSession:
    """One ``requests`` session for every proxied target of a flusher.

    ``trust_env`` is off (it read the proxy variables and looked for a
    ``.netrc`` file on every request): each target carries its proxies, read once.
    """

    def __init__(self, senders: int, timeout_s: float, ca_bundle: str) -> None:
        self._timeout_s = timeout_s
        self._ca_bundle = ca_bundle
        self._session = requests.Session()
        self._session.trust_env = False
        adapter = DeadlineAdapter(pool_maxsize=senders)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def post(
        self, url: str, body: bytes, headers: dict[str, str], proxies: dict[str, str]
    ) -> ProxiedAnswer:
        """POST ``body``; the answer once its head is in. No redirect is followed."""
        response = self._session.post(
            url,
            data=body,
            headers=headers,
            proxies=proxies,
            verify=self._ca_bundle,
            timeout=self._timeout_s,
            allow_redirects=False,
            stream=True,
        )
        return ProxiedAnswer(response)

    def close(self) -> None:
        self._session.close()


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


# -- urllib3 connections that join the request's deadline ------------------------------------
def _new_conn_within(conn: HTTPConnection, deadline: Deadline, dns_host: str) -> socket.socket:
    """What urllib3's ``_new_conn`` does, with the lookup and the connect bounded."""
    timeout = float(conn.timeout) if isinstance(conn.timeout, (int, float)) else None
    try:
        return connect_within(
            deadline,
            (dns_host, conn.port),
            timeout,
            conn.socket_options or (),
            conn.source_address,
        )
    except (TimeoutError, socket.timeout) as exc:
        message = f"connecting to {conn.host} took more than request_timeout: {exc}"
        raise ConnectTimeoutError(conn, message) from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc


class DeadlineHTTPConnection(HTTPConnection):
    """An urllib3 connection that joins the thread's current :class:`Deadline`."""

    owner: Optional[Deadline] = None

    def _new_conn(self) -> socket.socket:
        deadline = current_deadline()
        if deadline is None:
            return super()._new_conn()
        deadline.watch(self)
        return _new_conn_within(self, deadline, self._dns_host)

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline = current_deadline()
        if deadline is not None:
            deadline.watch(self)
        super().request(*args, **kwargs)


class DeadlineHTTPSConnection(DeadlineHTTPConnection, HTTPSConnection):
    """The TLS twin of :class:`DeadlineHTTPConnection`: the same two methods, whose
    ``super()`` is then urllib3's HTTPS connection (the handshake comes after
    ``_new_conn``, within the deadline the connection joined)."""


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose pools (direct and through HTTP proxies) make deadline connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(POOL_CLASSES)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(POOL_CLASSES)
        return manager
