"""The real poster, in process, against tiny misbehaving servers on 127.0.0.1.

Timing assertions are generous upper bounds only, where the point is that an
attempt is bounded (``request_timeout=1`` must settle it well within 5 s).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from support.tiny_servers import (
    TEST_CA,
    RawServer,
    ScriptedServer,
    Seen,
    cut_off,
    drip,
    read_request,
)

from trubrics_mp._config import Config
from trubrics_mp._deadline import Deadline, Resolver, Watchdog
from trubrics_mp._http import HttpPoster
from trubrics_mp._retry import Outcome
from trubrics_mp._route import Route

KEY = "sk-poster-test-5e0b"
LOG = logging.getLogger("trubrics_mp.tests")
BODY = b'[{"user_id":"u","event":"e","properties":{},"timestamp":"2026-01-01T00:00:00+00:00"}]'
BOUND_S = 5.0  # "bounded": far above request_timeout=1, far below what a hang costs
OK = (200, {"Content-Type": "application/json"}, b'{"accepted": 1}')


@pytest.fixture
def poster() -> Iterator[Callable[..., HttpPoster]]:
    made: list[HttpPoster] = []

    def make(host: str, **settings: Any) -> HttpPoster:
        made.append(HttpPoster(Config(api_key=KEY, host=host, **settings), LOG))
        return made[-1]

    yield make
    for each in made:
        each.close()


def timed_post(poster: HttpPoster, limit_s: float = BOUND_S) -> tuple[Outcome, float]:
    """Post from a helper thread; fail (without hanging the suite) past ``limit_s``."""
    result: list[Outcome] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(poster.post("publish_events", BODY)))
    thread.start()
    thread.join(limit_s)
    elapsed = time.monotonic() - started
    assert result, f"the post was still running after {limit_s} s"
    return result[0], elapsed


# -- redirects and the API key -------------------------------------------------------------
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target_host", ["127.0.0.1", "localhost"])
def test_a_redirect_is_not_followed_and_names_the_location(
    poster: Callable[..., HttpPoster], status: int, target_host: str
) -> None:
    with ScriptedServer(lambda seen: OK) as target:
        location = target.url.replace("127.0.0.1", target_host) + "/elsewhere"
        with ScriptedServer(lambda seen: (status, {"Location": location}, b"")) as origin:
            outcome = poster(origin.url).post("publish_events", BODY)
            assert [(s.method, s.headers["x-api-key"]) for s in origin.seen] == [("POST", KEY)]
        assert target.seen == []  # neither the events nor the key went there
    assert outcome.status == status
    assert f"redirect to {location} not followed" in outcome.detail


def test_a_relative_location_is_named_in_full(poster: Callable[..., HttpPoster]) -> None:
    with ScriptedServer(lambda seen: (302, {"Location": "/v2/publish_events"}, b"")) as origin:
        outcome = poster(origin.url).post("publish_events", BODY)
    assert f"redirect to {origin.url}/v2/publish_events not followed" in outcome.detail


# -- a 2xx status line means delivered -----------------------------------------------------
def test_a_2xx_whose_body_is_cut_off_is_delivered(poster: Callable[..., HttpPoster]) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with RawServer(cut_off(head, b'{"acc')) as server:
        outcome = poster(server.url).post("publish_events", BODY)
    assert outcome.status == 200 and server.requests == 1


def test_a_2xx_whose_body_never_ends_is_delivered_within_the_timeout(
    poster: Callable[..., HttpPoster],
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    with RawServer(drip(b"x" * 1000, 0.5, first=head)) as server:
        outcome, _ = timed_post(poster(server.url, request_timeout_s=1.0))
    assert outcome.status == 200


def test_a_2xx_keeps_the_connection_for_the_next_request(
    poster: Callable[..., HttpPoster],
) -> None:
    with ScriptedServer(lambda seen: OK) as server:
        made = poster(server.url)
        assert [made.post("publish_events", BODY).status for _ in range(3)] == [200] * 3
        assert len({s.peer for s in server.seen}) == 1


def test_an_error_detail_is_read_with_the_key_redacted(
    poster: Callable[..., HttpPoster],
) -> None:
    def answer(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        return 422, {}, b'{"detail": "key ' + seen.headers["x-api-key"].encode() + b' refused"}'

    with ScriptedServer(answer) as server:
        outcome = poster(server.url).post("publish_events", BODY)
    assert (outcome.status, outcome.detail) == (422, "key <api key> refused")


def test_each_route_gets_its_own_key_on_its_own_host(
    poster: Callable[..., HttpPoster],
) -> None:
    """One flusher, clients of two projects: each batch carries its client's key, to its
    client's host; a detail echoing a route's key is redacted too."""

    def answer(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        if seen.headers["x-api-key"] == "sk-two":
            return 422, {}, b'{"detail": "key sk-two refused"}'
        return OK

    with ScriptedServer(answer) as one, ScriptedServer(answer) as two:
        made = poster(one.url)
        route = Route(two.url, "sk-two", 20, 10.0)
        assert made.post("publish_events", BODY).status == 200
        refused = made.post("publish_events", BODY, route)
        assert made.post("publish_llm_events", BODY, Route(one.url, "sk-one", 5, 1.0)).status == 200
    assert [s.headers["x-api-key"] for s in one.seen] == [KEY, "sk-one"]
    assert [(s.path, s.headers["x-api-key"]) for s in two.seen] == [("/publish_events", "sk-two")]
    assert (refused.status, refused.detail) == (422, "key <api key> refused")


@pytest.mark.internal_errors_allowed  # an unsendable key is logged as an unexpected error
def test_a_route_whose_key_cannot_be_sent_fails_its_attempt_unquoted_and_others_still_post(
    poster: Callable[..., HttpPoster], caplog: pytest.LogCaptureFixture
) -> None:
    with ScriptedServer(lambda seen: OK) as server:
        made = poster(server.url)
        refused = made.post("publish_events", BODY, Route(server.url, "sk-bad\nX: 1", 20, 10.0))
        assert made.post("publish_events", BODY).status == 200
    assert refused.status is None and "sk-bad" not in (refused.detail or "")
    assert [s.headers["x-api-key"] for s in server.seen] == [KEY]
    assert "sk-bad" not in caplog.text


# -- TLS and proxies -----------------------------------------------------------------------
def test_https_is_verified_against_the_ca_bundle_requests_would_use(
    poster: Callable[..., HttpPoster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trusted through ``REQUESTS_CA_BUNDLE``: delivered, twice on one connection."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TEST_CA))
    with ScriptedServer(lambda seen: OK, tls=True) as server:
        made = poster(server.url.replace("127.0.0.1", "localhost"))
        assert [made.post("publish_events", BODY).status for _ in range(2)] == [200, 200]
    assert [(s.path, s.headers["x-api-key"]) for s in server.seen] == [("/publish_events", KEY)] * 2
    assert len({s.peer for s in server.seen}) == 1


def test_https_with_an_untrusted_certificate_is_refused_before_anything_is_sent(
    poster: Callable[..., HttpPoster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)  # certifi's bundle: not the test CA
    with ScriptedServer(lambda seen: OK, tls=True) as server:
        outcome = poster(server.url).post("publish_events", BODY)
    assert outcome.status is None
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.detail, outcome.detail
    assert server.seen == []


def test_a_host_behind_a_proxy_is_reached_through_it_with_its_key(
    poster: Callable[..., HttpPoster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy (a scripted server here) gets the absolute URL: it is the one asked."""
    with ScriptedServer(lambda seen: OK) as proxy:
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        api = "http://api.invalid:8080/ingest"  # never resolved: the proxy answers
        outcome = poster(api).post("publish_events", BODY)
    assert outcome.status == 200, outcome.detail
    assert [(s.method, s.path, s.headers["x-api-key"]) for s in proxy.seen] == [
        ("POST", f"{api}/publish_events", KEY)
    ]
    assert proxy.seen[0].body == BODY


# -- request_timeout bounds the whole request ----------------------------------------------
def test_a_status_line_dripping_two_bytes_a_second_is_cut_at_request_timeout(
    poster: Callable[..., HttpPoster],
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    with RawServer(drip(answer, 0.5)) as server:  # each byte well within a read timeout
        outcome, elapsed = timed_post(poster(server.url, request_timeout_s=1.0))
    assert outcome.status is None and "request_timeout (1 s)" in outcome.detail
    assert elapsed < BOUND_S


def test_a_kept_alive_connection_is_cut_at_request_timeout_on_its_next_request(
    poster: Callable[..., HttpPoster],
) -> None:
    """The second request reuses the first's connection: the deadline bounds it too."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    slow = drip(ok, 0.5)  # each byte well within a read timeout

    def reply(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(ok)
        if read_request(conn) is not None:
            slow(conn, stopping)

    with RawServer(reply) as server:
        made = poster(server.url, request_timeout_s=1.0)
        assert made.post("publish_events", BODY).status == 200
        outcome, elapsed = timed_post(made)
    assert outcome.status is None and "request_timeout (1 s)" in outcome.detail
    assert elapsed < BOUND_S
    assert server.requests == 1  # one connection served both requests


def test_a_tls_handshake_dripping_two_bytes_a_second_is_cut_at_request_timeout(
    poster: Callable[..., HttpPoster],
) -> None:
    """The server's first TLS record (a 16 kB handshake record) comes one byte at a time,
    each within a read timeout: only the request's deadline ends the handshake."""
    stopping = threading.Event()
    record = b"\x16\x03\x03\x40\x00"  # handshake, TLS 1.2, 16,384 bytes follow

    def serve(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(record)
            while not stopping.wait(0.5):
                conn.sendall(b"\x00")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve, args=(listener,), daemon=True)
        server.start()
        try:
            url = f"https://127.0.0.1:{listener.getsockname()[1]}"
            outcome, elapsed = timed_post(poster(url, request_timeout_s=1.0))
        finally:
            stopping.set()
            server.join(10)
    assert outcome.status is None and "request_timeout (1 s)" in outcome.detail
    assert elapsed < BOUND_S


def test_an_error_body_dripping_is_cut_at_request_timeout_with_its_status(
    poster: Callable[..., HttpPoster],
) -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n"
    with RawServer(drip(b"y" * 100, 0.5, first=head)) as server:
        outcome, _ = timed_post(poster(server.url, request_timeout_s=1.0))
    assert outcome.status == 503


def test_a_server_that_never_reads_the_body_is_cut_at_request_timeout(
    poster: Callable[..., HttpPoster],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # never accepts
        made = poster(f"http://127.0.0.1:{listener.getsockname()[1]}", request_timeout_s=1.0)
        result: list[Outcome] = []
        body = b"[" + b" " * 50_000_000 + b"]"
        thread = threading.Thread(target=lambda: result.append(made.post("publish_events", body)))
        thread.start()
        thread.join(BOUND_S)
        assert result and result[0].status is None


@pytest.fixture
def stuck_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``stuck.test`` never resolves (until the test ends); other names resolve as usual."""
    real = socket.getaddrinfo
    release = threading.Event()
    lookups: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "stuck.test":
            lookups.append(host)
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield lookups
    release.set()


def test_a_resolver_that_never_answers_is_cut_at_request_timeout(
    poster: Callable[..., HttpPoster], stuck_resolver: list[str]
) -> None:
    made = poster("http://stuck.test:9", request_timeout_s=1.0)
    first, elapsed = timed_post(made)
    second, _ = timed_post(made)
    assert first.status is None and "request_timeout (1 s)" in first.detail
    assert second.status is None
    assert elapsed < BOUND_S
    assert stuck_resolver == ["stuck.test"]  # the second attempt waited for the same lookup


# -- the deadline's pieces -------------------------------------------------------------------
class _Conn:
    """What a Deadline needs of a connection: an owner and a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.owner: Any = None
        self.sock = sock


def test_a_deadline_shuts_down_only_the_connections_it_still_owns() -> None:
    watchdog = Watchdog()
    left, right = socket.socketpair()
    conn: Any = _Conn(left)
    try:
        with Deadline(watchdog, Resolver(), 3600.0) as earlier:
            earlier.watch(conn)
        with Deadline(watchdog, Resolver(), 3600.0) as later:
            later.watch(conn)  # the pool handed the connection to another request
            earlier._expire()  # a late alarm of the first request
            right.sendall(b"x")
            assert left.recv(1) == b"x"  # still open
            later._expire()
            assert left.recv(1) == b""  # shut down: a blocked reader wakes up
            assert later.passed
    finally:
        watchdog.close()
        left.close()
        right.close()


def test_the_watchdog_runs_due_alarms_and_never_cancelled_ones() -> None:
    watchdog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    try:
        cancelled = watchdog.arm(time.monotonic() + 0.05, lambda: fired.append("cancelled"))
        watchdog.cancel(cancelled)

        def due() -> None:
            fired.append("due")
            done.set()

        watchdog.arm(time.monotonic() + 0.1, due)
        assert done.wait(BOUND_S)
    finally:
        watchdog.close()
    assert fired == ["due"]
