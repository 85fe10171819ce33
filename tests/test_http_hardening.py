"""The flusher's HTTP side against misbehaving servers, end to end.

The client lives in the pytest process (its flusher is a real child process);
the servers are tiny ones in threads of this process (``support/tiny_servers``),
all on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from support.tiny_servers import ScriptedServer, Seen

from trubrics_mp import Trubrics

API_KEY = "sk-hardening-test-91c4"
ClientFactory = Callable[..., Trubrics]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    made: list[Trubrics] = []

    def factory(host: str, **options: Any) -> Trubrics:
        settings = {"flush_at": 5, "flush_interval": 0.2, "max_retries": 2, **options}
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
def test_the_key_echoed_by_the_api_never_reaches_the_log(make_client, capfd, status):
    with ScriptedServer(echo_the_key(status)) as server:
        client = make_client(server.url, flush_at=1, max_retries=1)
        track(client, "echoed", 1)
        assert client.flush(timeout=60) is False
    err = capfd.readouterr().err
    assert "dropped 1 events for /publish_events" in err
    assert "<api key>" in err
    assert API_KEY not in err
