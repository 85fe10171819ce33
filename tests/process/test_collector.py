"""The local collector over HTTP, and the fault-injecting helper of the tests.

HTTP tests run the real server on 127.0.0.1 (port 0), either in this process (to reach
its settings and log) or as a subprocess through ``support.collector.CollectorProcess``.
Validation and storage alone are tested in ``tests/unit``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import pytest
from support.collector import CollectorProcess
from support.payloads import NAIVE, llm_event, plain_event
from support.processes import WaitTimeout

from trubrics_mp.collector import (
    CollectorHandler,
    CollectorServer,
    EventStore,
    Response,
    error_response,
    make_server,
)
from trubrics_mp.collector import _http as collector_http

API_KEY = "secret-key-4f1c"
JSON_HEADERS = {"Content-Type": "application/json", "x-api-key": API_KEY}


# ---- in-process server ----------------------------------------------------------------
class Server:
    """A collector served by a thread of this process."""

    def __init__(self, server: CollectorServer, log: list[str]) -> None:
        self.server, self.log = server, log
        self.port = server.port
        self.store: EventStore = server.store

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


@contextmanager
def running(store: EventStore, **options: Any) -> Iterator[Server]:
    log: list[str] = []
    server = make_server(store, "127.0.0.1", 0, log=log.append, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Server(server, log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def server(store: EventStore) -> Iterator[Server]:
    with running(store) as srv:
        yield srv


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Optional[bytes] = None,
    headers: Optional[dict[str, str]] = None,
) -> tuple[int, dict[str, str], Any]:
    """Send exactly the given headers (no automatic Content-Length) and read the answer."""
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders(body)
    response = conn.getresponse()
    raw = response.read()
    found = {name.lower(): value for name, value in response.getheaders()}
    assert found.get("content-type") == "application/json"
    return response.status, found, json.loads(raw) if raw else None


def post(
    srv: Server,
    body: Any,
    path: str = "/publish_events",
    headers: Optional[Mapping[str, Optional[str]]] = None,
    conn: Optional[http.client.HTTPConnection] = None,
) -> tuple[int, dict[str, str], Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    merged = {**JSON_HEADERS, "Content-Length": str(len(raw)), **(headers or {})}
    sent = {name: value for name, value in merged.items() if value is not None}
    return request(conn or srv.connection(), "POST", path, raw, sent)


# ---- HTTP: success and errors ------------------------------------------------------------
def test_accepts_and_stores_a_batch(server: Server) -> None:
    status, _, body = post(server, [plain_event(0), plain_event(1)])
    assert (status, body) == (200, {"accepted": 2})
    status, _, body = post(server, [llm_event()], "/publish_llm_events")
    assert (status, body) == (200, {"accepted": 1})
    assert server.store.count_events() == 3
    assert server.log == [
        "accepted 2 event(s) on /publish_events (batch 1)",
        "accepted 1 event(s) on /publish_llm_events (batch 2)",
    ]


@pytest.mark.parametrize("key", [None, "", "  "])
def test_401_without_api_key(server: Server, key: Optional[str]) -> None:
    status, _, body = post(server, [plain_event()], headers={"x-api-key": key})
    assert (status, body) == (401, {"detail": "missing x-api-key header"})
    assert server.store.count_events() == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_415_unless_json(server: Server, content_type: Optional[str]) -> None:
    status, _, body = post(server, [plain_event()], headers={"Content-Type": content_type})
    assert status == 415 and "application/json" in body["detail"]


def test_json_content_type_parameters_are_allowed(server: Server) -> None:
    headers = {"Content-Type": "Application/JSON; charset=utf-8"}
    assert post(server, [plain_event()], headers=headers)[0] == 200


def test_411_without_content_length(server: Server) -> None:
    conn = server.connection()
    status, found, body = request(conn, "POST", "/publish_events", None, JSON_HEADERS)
    assert (status, body) == (411, {"detail": "Content-Length header required"})
    assert found["connection"] == "close"


def test_413_without_reading_the_body(store: EventStore) -> None:
    with running(store, max_body_bytes=1024) as srv:
        status, _, body = post(srv, [plain_event(i) for i in range(40)])
        assert status == 413 and "exceeds 1024 bytes" in body["detail"]
        # A huge declared length is refused at once: the body is never waited for.
        headers = {**JSON_HEADERS, "Content-Length": str(10**9)}
        status, found, _ = request(srv.connection(), "POST", "/publish_events", b"[", headers)
        assert (status, found["connection"]) == (413, "close")
        assert post(srv, [plain_event()])[0] == 200


UNPROCESSABLE = [
    (b"[{", "invalid JSON"),
    (b"\xff\xfe", "body is not valid UTF-8"),
    (b'[{"latency": NaN}]', "invalid JSON: NaN is not valid JSON"),
    (b'{"user_id": "u"}', "body: expected a JSON list of events, got an object"),
    (json.dumps([plain_event()] * 101).encode(), "body: expected 1 to 100 events, got 101"),
    (json.dumps([plain_event(user_id=1)]).encode(), "events[0].user_id: expected a string"),
    (json.dumps([plain_event(), plain_event(extra=1)]).encode(), "events[1].extra: unknown"),
    (json.dumps([{"user_id": "u"}]).encode(), "events[0].event: field required"),
    (json.dumps([plain_event(timestamp=NAIVE)]).encode(), "events[0].timestamp: expected a"),
]


@pytest.mark.parametrize(("raw", "detail"), UNPROCESSABLE)
def test_422_for_bad_bodies(server: Server, raw: bytes, detail: str) -> None:
    status, _, body = post(server, raw)
    assert status == 422 and body["detail"].startswith(detail)
    assert server.store.count_events() == 0


def test_422_for_bad_llm_event(server: Server) -> None:
    status, _, body = post(server, [llm_event(latency=False)], "/publish_llm_events")
    assert (status, body) == (422, {"detail": "events[0].latency: expected a number or null"})


def test_404_and_501_are_json(server: Server) -> None:
    assert post(server, [plain_event()], "/publish")[:3:2] == (
        404,
        {"detail": "not found: POST /publish"},
    )
    status, _, body = request(server.connection(), "GET", "/nope")
    assert (status, body) == (404, {"detail": "not found: GET /nope"})
    status, _, body = request(server.connection(), "PUT", "/events", b"", {"Content-Length": "0"})
    assert status == 501 and "detail" in body


def test_garbage_request_line_gets_a_json_400(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and "detail" in json.loads(body)
    assert post(server, [plain_event()])[0] == 200


# ---- HTTP: read side -----------------------------------------------------------------------
def test_get_events_filters_and_health(server: Server) -> None:
    post(server, [plain_event(0, "a"), plain_event(1, "b"), plain_event(2, "a")])
    post(server, [llm_event(user_id="a")], "/publish_llm_events")
    conn = server.connection()

    def get(path: str) -> Any:
        status, _, body = request(conn, "GET", path)
        assert status == 200, body
        return body

    assert [e["id"] for e in get("/events")] == [1, 2, 3, 4]
    assert [e["id"] for e in get("/events?user_id=a")] == [1, 3, 4]
    assert [e["id"] for e in get("/events?user_id=a&event=Sign+up")] == [1, 3]
    assert [e["id"] for e in get("/events?event=Generation")] == [4]
    assert [e["id"] for e in get("/events?limit=2")] == [3, 4]
    assert get("/events?since=2999-01-01T00:00:00%2B00:00") == []
    assert len(get("/events?since=2000-01-01T00:00:00")) == 4
    assert get("/health") == {"ok": True, "events": 4, "batches": 2}
    assert [(b["id"], b["kind"], b["n_events"]) for b in get("/batches")] == [
        (1, "event", 3),
        (2, "llm_event", 1),
    ]
    for bad in ("limit=-1", "limit=x", "since=soon", "user=a"):
        status, _, body = request(conn, "GET", f"/events?{bad}")
        assert status == 400 and body["detail"], bad


# ---- HTTP: keep-alive, latency, robustness ---------------------------------------------------
def test_keep_alive_two_requests_one_connection(server: Server) -> None:
    conn = server.connection()
    assert post(server, [plain_event()], conn=conn)[0] == 200
    first_socket = conn.sock
    assert first_socket is not None
    assert post(server, b"[{", conn=conn)[0] == 422  # an error keeps the connection too
    assert request(conn, "GET", "/health")[0] == 200
    assert conn.sock is first_socket
    conn.close()


class _Clock:
    """Stands in for the ``time`` module of the collector's handler: records sleeps."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_latency_delays_post_responses(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(collector_http, "time", clock)
    with running(store, latency_s=0.2) as srv:
        assert post(srv, [plain_event()])[0] == 200
        assert request(srv.connection(), "GET", "/health")[0] == 200
        assert post(srv, b"[{")[0] == 422
    assert clock.slept == [0.2, 0.2]  # before each POST's answer, errors too; GETs at once


class _Hooked(CollectorHandler):
    """Injects a 503 for /publish_events, blows up on /publish_llm_events."""

    def before_post(self, path: str) -> Optional[Response]:
        if path == "/publish_llm_events":
            raise RuntimeError("boom")
        return error_response(503, "injected", {"Retry-After": "2"})


def test_before_post_hook_and_handler_exceptions(store: EventStore) -> None:
    with running(store, handler_class=_Hooked) as srv:
        conn = srv.connection()
        status, found, body = post(srv, [plain_event()], conn=conn)
        assert (status, found["retry-after"], body) == (503, "2", {"detail": "injected"})
        sock = conn.sock
        assert post(srv, [plain_event()], conn=conn)[0] == 503
        assert conn.sock is sock, "the discarded body must keep the connection usable"
        status, _, body = post(srv, [llm_event()], "/publish_llm_events")
        assert (status, body) == (500, {"detail": "internal error: RuntimeError"})
        assert request(srv.connection(), "GET", "/health")[0] == 200
        assert any("RuntimeError('boom')" in line for line in srv.log)
        assert store.count_events() == 0
        assert all(API_KEY not in line for line in srv.log)


# ---- subprocess collector --------------------------------------------------------------------
def test_concurrent_writers_are_stored_exactly_once(collector: CollectorProcess) -> None:
    threads, per_thread = 8, 50
    failures: list[str] = []

    def writer(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=60)
        try:
            for i in range(per_thread):
                raw = json.dumps([plain_event(i, user=f"writer-{t}")]).encode()
                headers = {**JSON_HEADERS, "Content-Length": str(len(raw))}
                status, _, body = request(conn, "POST", "/publish_events", raw, headers)
                if status != 200:
                    failures.append(f"{t}/{i}: {status} {body}")
        finally:
            conn.close()

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    events = collector.wait_for_events(threads * per_thread)
    keys = [(e["user_id"], e["properties"]["i"]) for e in events]
    assert len(keys) == len(set(keys)) == threads * per_thread
    assert len(collector.batches()) == threads * per_thread


def test_restart_keeps_the_data(tmp_path: Path) -> None:
    process = CollectorProcess(tmp_path)
    try:
        process.start()
        assert process.post([plain_event(0), plain_event(1)])[0] == 200
        assert process.stop() == 0
        process.start()
        assert process.post([plain_event(2)])[0] == 200
        events = process.wait_for_events(3)
        assert [e["properties"]["i"] for e in events] == [0, 1, 2]
        assert [b["id"] for b in process.batches()] == [1, 2]
    finally:
        process.stop()
    assert "stopped (SIGTERM): 3 event(s) in 2 batch(es)" in process.output_text


def test_fault_injection_fail_count_then_success(collector: CollectorProcess) -> None:
    collector.set_faults(fail_status=503, fail_count=3, retry_after="1")
    for attempt in range(3):
        status, headers, body = collector.post([plain_event(attempt)])
        assert (status, headers["retry-after"]) == (503, "1")
        assert body["detail"] == f"injected failure {attempt + 1} of 3"
    assert collector.post([plain_event(3)])[:3:2] == (200, {"accepted": 1})
    assert [e["properties"]["i"] for e in collector.wait_for_events(1)] == [3]
    collector.set_faults(fail_status=429, fail_count=1)  # same settings again: a new count
    assert collector.post([plain_event(4)])[0] == 429
    assert collector.post([plain_event(5)])[0] == 200


def test_fault_injection_down_until_cleared(collector: CollectorProcess) -> None:
    collector.set_faults(down=True)
    for _ in range(5):
        status, headers, _ = collector.post([llm_event()], "/publish_llm_events")
        assert status == 503 and "retry-after" not in headers
    collector.clear_faults()
    assert collector.post([llm_event()], "/publish_llm_events")[0] == 200
    assert len(collector.wait_for_events(1)) == 1


def test_fault_count_is_consumed_exactly_under_concurrency(collector: CollectorProcess) -> None:
    collector.set_faults(fail_count=10, delay_s=0.01)
    statuses: list[int] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        for i in range(5):
            status = collector.post([plain_event(i, user=f"c-{n}")])[0]
            with lock:
                statuses.append(status)

    workers = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(statuses) == [200] * 30 + [503] * 10
    assert len(collector.wait_for_events(30)) == 30


def test_wait_for_events_fails_clearly(collector: CollectorProcess) -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for at least 1 event\(s\) .* has 0"):
        collector.wait_for_events(1, timeout=0.3)


def test_collector_process_runs_with_the_latency_asked_for(tmp_path: Path) -> None:
    with CollectorProcess(tmp_path, latency_ms=150) as process:
        assert process.post([plain_event()])[0] == 200
        process.wait_for(r"POST latency: 0\.15 s$")
    with CollectorProcess(tmp_path, name="plain") as process:
        assert process.post([plain_event()])[0] == 200
        process.wait_for(r"POST latency: 0 s$")
