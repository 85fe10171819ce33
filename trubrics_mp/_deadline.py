"""One deadline for a whole HTTP request: name resolution, connecting, sending, the answer.

``requests`` (through urllib3) bounds each socket operation, not a request:
a server that sends one byte per second never trips a read timeout (a 40-byte
answer took 40 s with ``timeout=2``), and name resolution (``getaddrinfo``)
has no timeout at all (a resolver that never answers holds the request as
long as the C library insists, 10 s and more). This module adds:

- :class:`Resolver`: ``socket.getaddrinfo`` in a daemon helper thread, waited
  for only as long as the deadline allows. At most one lookup per name and
  port is under way: callers that come while it runs wait for the same one,
  so a resolver that never answers holds one thread, not one per request.
- :class:`Watchdog`: one daemon thread that runs alarms at their deadlines.
- :class:`Deadline`: one request's deadline. The connections the request uses
  join it (when they connect and when they send a request); when it passes,
  the watchdog shuts their sockets down (``shutdown(SHUT_RDWR)``), so whatever
  the sender thread is blocked in (connecting, a TLS handshake, sending,
  reading the status line or the body) fails at once.
- ``_proxied.DeadlineAdapter``: a ``requests`` adapter whose connection pools
  make such connections, for requests through a proxy.

Measured with ``request_timeout=2`` on loopback: an answer of 40 bytes sent one
byte per second took 40.0 s before and takes 2.0 s; a lookup that answers after
15 s held the request 15.0 s and now 2.0 s. The cost is one heap push and pop
per request under a lock, and no thread switch (the watchdog sleeps until the
earliest deadline): 4 threads posting to a loopback server made about 3,000
requests/s with and without it.

Caveats: SOCKS proxies (``socks5://``) use urllib3's own connections, so their
requests keep the per-operation timeouts only. A lookup that never returns
keeps its helper thread until the process exits. The caller sees whatever
the interrupted operation raised (a connection or protocol error):
:attr:`Deadline.passed` says whether the deadline was the cause. A connection
that was shut down is never reused: urllib3 closes it on the error, or finds
it dropped when it next takes it from the pool.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import heapq
import ipaddress
import itertools
import socket
import threading
import time
from typing import Any, Callable, Optional, Protocol, Sequence, Union

AddrInfo = tuple[Any, ...]  # one getaddrinfo entry: family, type, proto, canonname, sockaddr


class Watched(Protocol):
    """A connection a deadline can shut down: its socket, and the deadline it is under."""

    owner: Optional[Deadline]
    sock: Any


_current = threading.local()  # the Deadline of the request this thread is making, if any
_owners = threading.Lock()  # guards every Deadline's state and every connection's owner


class Resolver:
    """Name lookups with a timeout; one lookup under way per (host, port)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], concurrent.futures.Future[list[AddrInfo]]] = {}

    def resolve(self, host: str, port: int, timeout_s: float) -> list[AddrInfo]:
        """``getaddrinfo`` for a TCP connection; raises ``TimeoutError`` past ``timeout_s``."""
        if _is_ip_literal(host):  # nothing to look up: answered at once
            return _lookup(host, port)
        with self._lock:
            future = self._pending.get((host, port))
            if future is None:
                future = self._pending[(host, port)] = concurrent.futures.Future()
                threading.Thread(
                    target=self._run,
                    args=(host, port, future),
                    name="trubrics-mp-resolver",
                    daemon=True,
                ).start()
        try:
            return future.result(timeout=max(0.0, timeout_s))
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"resolving {host!r} took more than {timeout_s:.3g} s") from None

    def _run(self, host: str, port: int, future: concurrent.futures.Future[list[AddrInfo]]) -> None:
        try:
            future.set_result(_lookup(host, port))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            with self._lock:
                self._pending.pop((host, port), None)


def _lookup(host: str, port: int) -> list[AddrInfo]:
    return list(socket.getaddrinfo(host, port, _address_family(), socket.SOCK_STREAM))


@functools.cache
def _address_family() -> socket.AddressFamily:
    """IPv4 and IPv6 if this machine can bind ``::1``, else IPv4 only (urllib3's rule)."""
    if not socket.has_ipv6:
        return socket.AF_INET
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return socket.AF_INET
    return socket.AF_UNSPEC


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Watchdog:
    """Runs each armed action once its time (``clock()``) comes, unless cancelled first.

    One daemon thread, started by the first :meth:`arm`; actions run in it,
    one after the other, so they must be quick and must not raise.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def arm(self, when: float, action: Callable[[], None]) -> int:
        with self._cond:
            alarm = next(self._ids)
            self._actions[alarm] = action
            earliest = not self._heap or when < self._heap[0][0]
            heapq.heappush(self._heap, (when, alarm))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="trubrics-mp-watchdog", daemon=True
                )
                self._thread.start()
            elif earliest:  # else the thread already wakes up sooner than this is due
                self._cond.notify()
        return alarm

    def cancel(self, alarm: int) -> None:
        with self._cond:
            self._actions.pop(alarm, None)
            if len(self._heap) > 64 and len(self._heap) > 2 * len(self._actions):
                self._heap = [entry for entry in self._heap if entry[1] in self._actions]
                heapq.heapify(self._heap)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                action = self._next_due()
                if action is None:
                    return
            action()

    def _next_due(self) -> Optional[Callable[[], None]]:
        """Wait (under the lock) for the next due action; None once closed."""
        while not self._closed:
            if self._heap and self._heap[0][1] not in self._actions:
                heapq.heappop(self._heap)  # cancelled
                continue
            wait_s = self._heap[0][0] - self._clock() if self._heap else None
            if wait_s is not None and wait_s <= 0:
                return self._actions.pop(heapq.heappop(self._heap)[1])
            self._cond.wait(wait_s)
        return None


class Deadline:
    """``timeout_s`` from now for one request made by this thread (a context manager).

    While it is entered, the connections (of :class:`DeadlineAdapter`, and
    ``_direct``'s) used by
    this thread join it; when it passes, their sockets are shut down. Leaving
    it cancels the alarm and releases the connections, so a connection back
    in the pool is never touched by a deadline that is not its request's.
    """

    def __init__(
        self,
        watchdog: Watchdog,
        resolver: Resolver,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.timeout_s = timeout_s
        self._watchdog = watchdog
        self._clock = clock
        self._at = clock() + timeout_s
        self._alarm = -1
        self._conns: list[Watched] = []
        self._expired = False
        self._finished = False

    def remaining(self) -> float:
        return max(0.0, self._at - self._clock())

    @property
    def passed(self) -> bool:
        """Whether the deadline passed (the watchdog fired, or the time is up)."""
        return self._expired or self.remaining() <= 0

    def watch(self, conn: Watched) -> None:
        with _owners:
            conn.owner = self
            if conn not in self._conns:
                self._conns.append(conn)
            if self._expired:
                _shut_down(conn.sock)

    def _expire(self) -> None:
        with _owners:
            if self._finished:
                return
            self._expired = True
            for conn in self._conns:
                if conn.owner is self:
                    _shut_down(conn.sock)

    def __enter__(self) -> Deadline:
        self._alarm = self._watchdog.arm(self._at, self._expire)
        _current.deadline = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.deadline = None
        self._watchdog.cancel(self._alarm)
        with _owners:
            self._finished = True
            for conn in self._conns:
                if conn.owner is self:
                    conn.owner = None


def current_deadline() -> Optional[Deadline]:
    found: Optional[Deadline] = getattr(_current, "deadline", None)
    return found


def _shut_down(sock: object) -> None:
    """Wake whatever is blocked on ``sock`` (the plain socket call, also for TLS sockets)."""
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def connect_within(
    deadline: Deadline,
    address: tuple[str, int],
    timeout: Optional[float],
    options: Sequence[tuple[int, int, Union[int, bytes]]] = (),
    source_address: Optional[tuple[str, int]] = None,
) -> socket.socket:
    """Resolve and connect to the first address that answers, within the time left
    (and ``timeout``, the per-operation bound); ``TimeoutError`` or ``OSError`` if not."""
    host, port = address
    error: Optional[OSError] = None
    for family, type_, proto, _, sockaddr in deadline.resolver.resolve(
        host, port, deadline.remaining()
    ):
        sock = socket.socket(family, type_, proto)
        try:
            for option in options:
                sock.setsockopt(*option)
            remaining = deadline.remaining()
            sock.settimeout(remaining if timeout is None else min(remaining, timeout))
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error if error is not None else OSError("getaddrinfo returned no address")
