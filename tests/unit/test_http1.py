"""HTTP/1.1 as the direct connections speak it: the pure parser, then real sockets.

The socket tests drive ``DirectPool`` against ``RawServer`` on 127.0.0.1,
which writes answers byte for byte (chunked bodies, interim answers, a
connection that closes, more bytes than the answer said).
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Callable, Optional

import pytest
from support.tiny_servers import TEST_CA, RawServer

from trubrics_mp._config import Config
from trubrics_mp._direct import DirectAnswer, DirectPool, tls_context
from trubrics_mp._http import HttpPoster, _read_bounded
from trubrics_mp._http1 import (
    CHUNKED,
    CLOSE,
    LENGTH,
    NONE,
    BadAnswer,
    chunk_size,
    head_end,
    host_header,
    parse_head,
    request_head,
)

KEY = "sk-http1-test-77c1"
HEADERS = {"Content-Type": "application/json", "x-api-key": KEY}
Reply = Callable[[socket.socket, threading.Event], Optional[bool]]


# -- the answer's head ---------------------------------------------------------------------
def test_a_head_gives_its_status_version_and_headers_by_any_case() -> None:
    head = parse_head(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nretry-after: 9\r\nX-A:  b \r\n\r\n"
    )
    assert (head.version, head.status) == (11, 429)
    assert head.header("RETRY-AFTER") == "7"  # of a repeated header the first counts
    assert head.header("x-a") == "b"
    assert head.header("Location") is None


def test_a_head_with_bare_line_feeds_and_no_reason_is_read() -> None:
    head = parse_head(b"HTTP/1.0 200\nContent-Length: 2\n\n")
    assert (head.version, head.status, head.framing) == (10, 200, (LENGTH, 2))


@pytest.mark.parametrize(
    "line",
    [b"HTTP/2 200 OK", b"ICY 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK", b"<html>", b""],
)
def test_what_is_not_an_http1_status_line_is_a_bad_answer(line: bytes) -> None:
    with pytest.raises(BadAnswer, match="status line"):
        parse_head(line + b"\r\n\r\n")


@pytest.mark.parametrize("line", [b"no colon here", b": no name", b" Folded: value"])
def test_a_line_that_is_no_header_is_skipped_and_the_connection_not_reused(line: bytes) -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 2\r\n\r\n")
    assert (head.status, head.framing, head.keep_alive) == (200, (LENGTH, 2), False)
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n").keep_alive


def test_more_than_100_headers_are_a_bad_answer() -> None:
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    with pytest.raises(BadAnswer, match="100 headers"):
        parse_head(b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n")


@pytest.mark.parametrize(
    ("status", "headers", "framing"),
    [
        (204, b"Content-Length: 5\r\n", (NONE, 0)),
        (304, b"", (NONE, 0)),
        (100, b"", (NONE, 0)),
        (200, b"Transfer-Encoding: chunked\r\n", (CHUNKED, 0)),
        (200, b"Transfer-Encoding: gzip, Chunked\r\nContent-Length: 5\r\n", (CHUNKED, 0)),
        (200, b"Transfer-Encoding: chunked, gzip\r\n", (CLOSE, 0)),
        (200, b"Content-Length: 12\r\n", (LENGTH, 12)),
        (200, b"Content-Length: 0\r\n", (NONE, 0)),
        (500, b"", (CLOSE, 0)),
    ],
)
def test_the_body_ends_as_the_head_says(
    status: int, headers: bytes, framing: tuple[str, int]
) -> None:
    assert parse_head(b"HTTP/1.1 %d X\r\n%s\r\n" % (status, headers)).framing == framing


@pytest.mark.parametrize("length", [b"-1", b"12, 13", b"0x10", b"9" * 19, "\u00b2".encode()])
def test_a_content_length_that_is_not_a_length_means_read_to_the_close(length: bytes) -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n")
    assert head.framing == (CLOSE, 0)


def test_a_content_length_repeated_with_one_value_is_that_length() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n").framing == (LENGTH, 2)


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"Connection: Keep-Alive, Close\r\n", False),
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", True),
    ],
)
def test_keep_alive_follows_the_version_and_the_connection_header(
    version: bytes, connection: bytes, keep_alive: bool
) -> None:
    head = parse_head(b"HTTP/" + version + b" 200 OK\r\n" + connection + b"\r\n")
    assert head.keep_alive is keep_alive


def test_a_switching_protocols_answer_never_keeps_the_connection() -> None:
    assert not parse_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n").keep_alive


def test_the_end_of_a_head_is_found_after_its_blank_line() -> None:
    assert head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n") == -1
    assert head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody") == len(
        b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"
    )
    assert head_end(b"HTTP/1.1 200 OK\nA: b\n\nbody") == len(b"HTTP/1.1 200 OK\nA: b\n\n")


def test_a_chunk_size_is_hex_and_its_extensions_are_ignored() -> None:
    assert chunk_size(b"1a\r\n") == 26
    assert chunk_size(b"0;name=value\r\n") == 0
    with pytest.raises(BadAnswer, match="chunk-size"):
        chunk_size(b"zz\r\n")


# -- the request's head --------------------------------------------------------------------
def test_the_request_head_is_built_once_with_host_and_no_compression() -> None:
    assert request_head("api.example:8080", "/v1/e?x=1", {"A": "b"}) == (
        b"POST /v1/e?x=1 HTTP/1.1\r\nHost: api.example:8080\r\nAccept-Encoding: identity\r\n"
        b"A: b\r\nContent-Length: "
    )


def test_the_host_header_names_the_port_only_when_it_is_not_the_default() -> None:
    assert host_header("a.example", 443, "https") == "a.example"
    assert host_header("a.example", 443, "http") == "a.example:443"
    assert host_header("::1", 80, "http") == "[::1]"
    assert host_header("::1", 8080, "http") == "[::1]:8080"


@pytest.mark.parametrize(
    ("path", "headers", "match"),
    [
        ("/e", {"x-api-key": KEY + "\r\nX-Injected: 1"}, "CR, LF or NUL"),
        ("/e", {"x-api-key": KEY + "\0"}, "CR, LF or NUL"),
        ("/e", {"x-api-key": KEY + "\u20ac"}, "Latin-1"),
        ("/e", {"bad name": "v"}, "not a token"),
        ("/a b", {}, "space or a control"),
    ],
)
def test_what_cannot_go_on_the_wire_is_refused_without_quoting_the_key(
    path: str, headers: dict[str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match) as raised:
        request_head("h", path, headers)
    assert KEY not in str(raised.value)


# -- real sockets --------------------------------------------------------------------------
def answers(*raw: bytes, keep: bool = False) -> Reply:
    """A ``RawServer`` reply writing the answers in turn, one per request (then again from
    the first); with ``keep`` the connection stays open for the next request."""
    sent = itertools.count()

    def reply(conn: socket.socket, stopping: threading.Event) -> bool:
        conn.sendall(raw[next(sent) % len(raw)])
        return keep

    return reply


@pytest.fixture
def pool_of() -> Iterator[Callable[[RawServer], DirectPool]]:
    made: list[DirectPool] = []

    def make(server: RawServer) -> DirectPool:
        port = int(server.url.rsplit(":", 1)[1])
        made.append(DirectPool("http", "127.0.0.1", port, timeout_s=10.0, maxsize=2))
        return made[-1]

    yield make
    for pool in made:
        pool.close()


def post(pool: DirectPool, body: bytes = b"[]") -> tuple[DirectAnswer, bytes]:
    """One POST: the answer (released) and its body."""
    answer = pool.post(pool.head("/e", HEADERS), body)
    try:
        return answer, _read_bounded(answer)
    finally:
        answer.release()


CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
LENGTH_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_chunked_body_is_read_whole_and_the_connection_kept(
    pool_of: Callable[[RawServer], DirectPool],
) -> None:
    with RawServer(answers(CHUNKED_OK, keep=True)) as server:
        pool = pool_of(server)
        assert post(pool)[1] == b"hello, world"
        assert post(pool)[1] == b"hello, world"
        assert (server.requests, server.connections) == (2, 1)


def test_the_request_carries_its_length_host_and_headers_and_the_body_intact(
    pool_of: Callable[[RawServer], DirectPool],
) -> None:
    body = b'[{"e": "' + b"x" * 100_000 + b'"}]'
    with RawServer(answers(LENGTH_OK)) as server:
        answer, said = post(pool_of(server), body)
        where = server.url.split("//")[1]
    lines = server.heads[0].decode().split("\r\n")
    assert lines[0] == "POST /e HTTP/1.1"
    assert f"Host: {where}" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert f"x-api-key: {KEY}" in lines
    assert server.bodies == [body]
    assert (answer.status, said) == (200, b"ok")


def test_connection_close_makes_the_next_request_connect_again(
    pool_of: Callable[[RawServer], DirectPool],
) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    with RawServer(answers(closing)) as server:
        pool = pool_of(server)
        assert [post(pool)[1] for _ in range(2)] == [b"ok", b"ok"]
        assert server.connections == 2


def test_an_http10_body_without_length_is_read_to_the_close_and_not_reused(
    pool_of: Callable[[RawServer], DirectPool],
) -> None:
    with RawServer(answers(b"HTTP/1.0 200 OK\r\n\r\n" + b"z" * 30_000)) as server:
        pool = pool_of(server)
        assert post(pool)[1] == b"z" * 30_000
        assert post(pool)[1] == b"z" * 30_000
        assert server.connections == 2


def test_an_interim_answer_is_skipped_for_the_final_one(
    pool_of: Callable[[RawServer], DirectPool],
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    with RawServer(answers(interim + b"HTTP/1.1 422 No\r\nContent-Length: 3\r\n\r\nbad")) as server:
        answer, said = post(pool_of(server))
    assert (answer.status, said) == (422, b"bad")


def test_bytes_past_the_answer_keep_the_connection_out_of_the_pool(
    pool_of: Callable[[RawServer], DirectPool],
) -> None:
    with RawServer(answers(LENGTH_OK + b"HTTP/1.1 200 OK\r\n", LENGTH_OK)) as server:
        pool = pool_of(server)
        assert [post(pool)[1] for _ in range(2)] == [b"ok", b"ok"]
        assert server.connections == 2


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000, "head over 64 KiB"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "closed inside the answer's head"),
        (b"", "closed connection without response"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "status line"),
    ],
)
def test_an_answer_that_is_no_http_fails_the_attempt(
    pool_of: Callable[[RawServer], DirectPool], raw: bytes, match: str
) -> None:
    with RawServer(answers(raw)) as server:
        pool = pool_of(server)
        with pytest.raises(Exception, match=match):
            pool.post(pool.head("/e", HEADERS), b"[]")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnope\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ],
)
def test_a_broken_body_is_read_as_far_as_it_goes_and_never_reused(
    pool_of: Callable[[RawServer], DirectPool], raw: bytes
) -> None:
    with RawServer(answers(raw, LENGTH_OK)) as server:
        pool = pool_of(server)
        answer = pool.post(pool.head("/e", HEADERS), b"[]")
        with pytest.raises(BadAnswer):
            while answer.read(65_536):
                pass
        answer.release()
        assert post(pool)[1] == b"ok"
        assert server.connections == 2


def test_the_poster_reports_a_bad_answer_as_a_failed_attempt() -> None:
    with RawServer(answers(b"ICY 200 OK\r\n\r\n")) as server:
        poster = HttpPoster(Config(api_key=KEY, host=server.url), logging.getLogger("t"))
        try:
            outcome = poster.post("publish_events", b"[]")
        finally:
            poster.close()
    assert outcome.status is None
    assert outcome.detail.startswith("BadAnswer: not an HTTP/1.x status line")


def test_a_tls_record_holding_more_than_the_answer_is_never_read_as_the_next_answer() -> None:
    """The rest of a TLS record stays in the SSL object, not the socket: the pool must
    see it, or the next request would take it for its own answer (a 200 for a 503)."""

    def reply(conn: socket.socket, stopping: threading.Event) -> bool:
        if server.requests == 1:
            conn.sendall(b"HTTP/1.1 500 Err\r\nContent-Length: 2\r\n\r\n")
            stopping.wait(0.05)  # the head in a record of its own, then one record with both
            conn.sendall(b"ok" + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
        else:
            conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
        return True

    with RawServer(reply, tls=True) as server:
        port = int(server.url.rsplit(":", 1)[1])
        pool = DirectPool("https", "127.0.0.1", port, 10.0, 2, tls_context(str(TEST_CA)))
        try:
            first, said = post(pool)
            assert (first.status, said) == (500, b"ok")
            second, said = post(pool)
        finally:
            pool.close()
    assert (second.status, said) == (503, b"busy")
    assert server.connections == 2
