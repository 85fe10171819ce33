"""The benchmark's sink (``benchmarks/sink.py``): what it counts and answers.

The sink is not shipped, but every figure of ``make bench`` rests on its
counts, so its parser and its answers are tested here, in this process, on a
real socket on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.sink import Request, Sink, listen


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink(listen("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve, name="bench-sink", daemon=True)
    thread.start()
    yield server
    server.running = False
    thread.join(30)
    server.close()
    assert not thread.is_alive()


def _connection(sink: Sink) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", sink.listener.getsockname()[1], timeout=30)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, **headers: str) -> int:
    conn.request("POST", path, body=body, headers=headers)
    answer = conn.getresponse()
    answer.read()
    return answer.status


def _events(*keys: str) -> bytes:
    return json.dumps([{"event": "e", "properties": {"bench_key": k}} for k in keys]).encode()


def _counts(sink: Sink) -> Any:
    conn = _connection(sink)
    conn.request("GET", "/counts")
    counts = json.loads(conn.getresponse().read())
    conn.close()
    return counts


def test_events_requests_and_distinct_keys_are_counted_per_label_on_one_connection(
    sink: Sink,
) -> None:
    assert _counts(sink) == {}
    conn = _connection(sink)
    assert _post(conn, "/run-a/publish_events", _events("1", "2", "2")) == 200
    assert _post(conn, "/run-a/publish_events", _events("3")) == 200  # kept alive
    assert _post(conn, "/run-b/batch/", json.dumps({"batch": [{"x": 1}]}).encode()) == 200
    conn.close()
    counts = _counts(sink)
    assert {k: counts["run-a"][k] for k in ("events", "requests", "distinct")} == {
        "events": 4,
        "requests": 2,
        "distinct": 3,
    }
    assert (counts["run-b"]["events"], counts["run-b"]["distinct"]) == (1, 0)


def test_a_gzip_body_a_delayed_label_and_a_nan_the_fast_parser_refuses_are_all_counted(
    sink: Sink,
) -> None:
    conn = _connection(sink)
    zipped = gzip.compress(_events("a", "b"))
    assert _post(conn, "/zipped/v1/batch", zipped, **{"Content-Encoding": "gzip"}) == 200
    assert _post(conn, "/d20/slow/publish_events", _events("c")) == 200
    assert _post(conn, "/d20/slow/publish_events", _events("d")) == 200
    assert _post(conn, "/nan/x", b'[{"properties": {"cost": NaN}}]') == 200
    conn.close()
    counts = _counts(sink)
    assert counts["zipped"]["events"] == 2 and counts["zipped"]["distinct"] == 2
    assert counts["slow"]["requests"] == 2 and counts["slow"]["distinct"] == 2
    assert counts["nan"]["events"] == 1


def test_a_bad_body_an_unknown_path_and_a_chunked_body_are_refused_and_not_counted(
    sink: Sink,
) -> None:
    conn = _connection(sink)
    assert _post(conn, "/bad/x", b"[not json") == 400
    assert _post(conn, "/", b"[]") == 404
    conn.close()
    with socket.create_connection(sink.listener.getsockname(), timeout=30) as raw:
        raw.sendall(b"POST /c/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        reply = b""
        while chunk := raw.recv(4096):  # the sink closes after its answer
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 411 ")
    counts = _counts(sink)
    assert "bad" not in counts and "c" not in counts


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"POST /a/b?q=1 HTTP/1.1\r\nContent-Length: 12", ("POST", "/a/b", 12, False, False)),
        (
            b"POST / HTTP/1.1\r\ncontent-encoding: GZIP\r\nConnection: Close",
            ("POST", "/", 0, True, True),
        ),
        (b"GET /counts HTTP/1.0", ("GET", "/counts", 0, False, True)),
    ],
)
def test_the_request_head_parser_reads_what_the_sink_needs(
    head: bytes, expected: tuple[Any, ...]
) -> None:
    request = Request(head)
    got = (request.method, request.path, request.length, request.gzip, request.close)
    assert got == expected


def test_a_request_line_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="bad request line"):
        Request(b"HELLO\r\nX: y")
