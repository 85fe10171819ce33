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


def _raw_exchange(sink: Sink, data: bytes, answers: int, half_close: bool = False) -> bytes:
    """Send ``data`` on a new connection; read until ``answers`` status lines arrived
    (or the sink closed)."""
    with socket.create_connection(sink.listener.getsockname(), timeout=30) as raw:
        raw.sendall(data)
        if half_close:
            raw.shutdown(socket.SHUT_WR)
        got = b""
        while got.count(b"HTTP/1.1 200 ") < answers and (chunk := raw.recv(65_536)):
            got += chunk
    return got


def _request(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def test_a_delayed_answer_is_counted_when_it_is_sent(sink: Sink) -> None:
    with socket.create_connection(sink.listener.getsockname(), timeout=30) as raw:
        raw.sendall(_request("/d3000/late/x", _events("a")))
        assert "late" not in _counts(sink)  # 3 s: far longer than this check takes
        assert raw.recv(65_536).startswith(b"HTTP/1.1 200 ")
    assert _counts(sink)["late"]["events"] == 1


def test_requests_sent_behind_a_delayed_one_are_answered_in_turn(sink: Sink) -> None:
    two = _request("/d20/piped/x", _events("a")) + _request("/d20/piped/x", _events("b"))
    assert _raw_exchange(sink, two, 2).count(b"HTTP/1.1 200 ") == 2
    assert (_counts(sink)["piped"]["requests"], _counts(sink)["piped"]["distinct"]) == (2, 2)


def test_a_delayed_request_is_counted_and_answered_when_its_client_half_closes(
    sink: Sink,
) -> None:
    got = _raw_exchange(sink, _request("/d20/half/x", _events("a", "b")), 1, half_close=True)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert _counts(sink)["half"]["events"] == 2


def test_last_at_and_bytes_follow_every_request(sink: Sink) -> None:
    conn = _connection(sink)
    first, second = _events("1"), _events("2", "3")
    assert _post(conn, "/t/x", first) == 200
    before = _counts(sink)["t"]
    assert _post(conn, "/t/x", second) == 200
    after = _counts(sink)["t"]
    conn.close()
    assert after["last_at"] > before["last_at"] >= before["first_at"] == after["first_at"]
    assert after["bytes"] == len(first) + len(second)


def test_a_corrupt_gzip_body_is_a_400_and_the_sink_serves_on(sink: Sink) -> None:
    conn = _connection(sink)
    corrupt = b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 16
    assert _post(conn, "/z/x", corrupt, **{"Content-Encoding": "gzip"}) == 400
    assert _post(conn, "/z/x", _events("a")) == 200
    conn.close()
    assert _counts(sink)["z"]["events"] == 1


def test_a_client_expecting_100_continue_gets_it_then_its_answer(sink: Sink) -> None:
    body = _events("a")
    head = f"POST /c/x HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n"
    with socket.create_connection(sink.listener.getsockname(), timeout=30) as raw:
        raw.sendall(head.encode() + b"Expect: 100-continue\r\n\r\n")
        assert raw.recv(65_536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw.sendall(body)
        assert raw.recv(65_536).startswith(b"HTTP/1.1 200 ")
    assert _counts(sink)["c"]["events"] == 1


def test_keys_the_fast_path_cannot_read_are_read_from_the_events(sink: Sink) -> None:
    conn = _connection(sink)
    odd = [{"properties": {"bench_key": k}} for k in ('a"b', 7, "é", "é")]
    assert _post(conn, "/o/x", json.dumps(odd).encode()) == 200  # escapes: \" and \u00e9
    assert _post(conn, "/o/x", json.dumps(odd[2:], ensure_ascii=False).encode()) == 200
    conn.close()
    assert (_counts(sink)["o"]["events"], _counts(sink)["o"]["distinct"]) == (6, 3)
