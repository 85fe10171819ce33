"""The flusher's HTTP side against misbehaving servers, end to end.

The client lives in the pytest process (its flusher is a real child process);
the servers are tiny ones in threads of this process (``support/tiny_servers``),
all on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from support.tiny_servers import RawServer, ScriptedServer, Seen, ThreadedCollector, cut_off, drip

from trubrics_mp import Trubrics
from trubrics_mp.doctor import WARN, check_host

API_KEY = "sk-hardening-test-91c4"
ClientFactory = Callable[..., Trubrics]


@pytest.fixture
def scripted_client() -> Iterator[ClientFactory]:
    made: list[Trubrics] = []

    def factory(host: str, **options: Any) -> Trubrics:
        # Nothing leaves before flush(), so every batch is one flush() waits for.
        settings = {"flush_at": 100, "flush_interval": 60, "max_retries": 2, **options}
        client = Trubrics(API_KEY, host, **settings)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close(timeout=30)


def track(client: Trubrics, src: str, count: int, pad: int = 0) -> None:
    for seq in range(count):
        properties = {"src": src, "seq": seq, "pad": "x" * pad}
        client.track(user_id="u", event="Sign up", properties=properties)


def echo_the_key(status: int) -> Callable[[Seen], tuple[int, dict[str, str], bytes]]:
    def answer(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        detail = {"detail": f"key {seen.headers.get('x-api-key')} is not allowed"}
        return status, {"Content-Type": "application/json"}, json.dumps(detail).encode()

    return answer


@pytest.mark.parametrize("status", [401, 422, 503])
def test_the_key_echoed_by_the_api_never_reaches_the_log(
    scripted_client: ClientFactory, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    with ScriptedServer(echo_the_key(status)) as server:
        client = scripted_client(server.url, max_retries=1)
        track(client, "echoed", 1)
        assert client.flush(timeout=60) is False
    err = caplog.text
    assert "dropped 1 events for /publish_events" in err
    assert "<api key>" in err
    assert API_KEY not in err


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_dropped_at_once_naming_the_location_and_the_key_stays_home(
    scripted_client: ClientFactory, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    with ScriptedServer(lambda seen: (200, {}, b"{}")) as elsewhere:
        location = f"{elsewhere.url}/publish_events"
        with ScriptedServer(lambda seen: (status, {"Location": location}, b"")) as api:
            client = scripted_client(api.url)
            track(client, "redirected", 5)
            assert client.flush(timeout=60) is False
            assert len(api.seen) == 1  # not retried
        assert elsewhere.seen == []  # neither a GET without body, nor the key
    stats = client.stats()
    assert stats.dropped == {"redirect": 5} and stats.delivered == 0
    err = caplog.text
    assert f"dropped 5 events for /publish_events (redirect): HTTP {status}" in err
    assert f"redirect to {location} not followed" in err


def test_a_200_whose_body_is_cut_off_is_delivered_once(scripted_client: ClientFactory) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with RawServer(cut_off(head, b'{"acc')) as api:
        client = scripted_client(api.url, max_retries=10)
        track(client, "cut", 5)
        assert client.flush(timeout=60) is True
        assert api.requests == 1  # no retry, so no duplicates
    stats = client.stats()
    assert stats.delivered == 5 and stats.retried_requests == 0


def test_a_dripping_api_costs_each_attempt_request_timeout_at_most(
    scripted_client: ClientFactory,
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    with RawServer(drip(answer, 0.5)) as api:  # each byte well within a read timeout
        client = scripted_client(api.url, request_timeout=1, max_retries=1)
        track(client, "slow", 5)
        started = time.monotonic()
        assert client.flush(timeout=60) is False
        elapsed = time.monotonic() - started
        assert api.requests == 2
    assert client.stats().dropped == {"retries_exhausted": 5}
    # Two attempts of 1 s and a backoff under 1 s; dripping, the answer takes 20 s each.
    assert elapsed < 10


def test_a_413_splits_the_batch_and_only_an_event_too_large_alone_is_dropped(
    scripted_client: ClientFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with ThreadedCollector(tmp_path / "small.sqlite3", max_body_bytes=4096) as api:
        client = scripted_client(api.url)
        track(client, "fits", 5, pad=700)  # about 800 bytes each
        client.track(user_id="u", event="Sign up", properties={"src": "huge", "pad": "x" * 5000})
        track(client, "fits-too", 4, pad=700)
        assert client.flush(timeout=60) is False  # one event of this process was lost
        stored = api.store.query()
    assert sorted(e["properties"]["src"] for e in stored) == ["fits"] * 5 + ["fits-too"] * 4
    stats = client.stats()
    assert (stats.delivered, stats.dropped, stats.held) == (9, {"too_large": 1}, 0)
    assert stats.retried_requests == 0
    err = caplog.text
    assert "dropped 1 events for /publish_events (too_large): HTTP 413" in err


def test_the_collector_answers_an_oversized_body_with_a_413_the_client_can_read(
    tmp_path: Path,
) -> None:
    body = b"[" + b" " * 4_000_000 + b"]"  # more than the socket buffers hold
    headers = {"Content-Type": "application/json", "x-api-key": API_KEY}
    with ThreadedCollector(tmp_path / "small.sqlite3", max_body_bytes=1024) as api:
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", int(api.url.rsplit(":", 1)[1]), 30)
            try:
                conn.request("POST", "/publish_events", body, headers)  # sends it all first
                response = conn.getresponse()
                answer = json.loads(response.read())
            finally:
                conn.close()
            assert response.status == 413
            assert answer["detail"] == f"body of {len(body)} bytes exceeds 1024 bytes"
            assert response.getheader("Connection") == "close"


def test_the_doctor_does_not_follow_a_redirect_with_the_key() -> None:
    with ScriptedServer(lambda seen: (200, {}, b"{}")) as elsewhere:
        location = f"{elsewhere.url}/publish_events"
        with ScriptedServer(lambda seen: (307, {"Location": location}, b"")) as api:
            check = check_host(api.url, API_KEY)
        assert elsewhere.seen == []
    assert check.verdict == WARN
    assert f"a redirect to {location}: set --host to that URL" in check.detail
