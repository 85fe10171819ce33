"""One small web app, as WSGI (``app``: granian, gunicorn) and ASGI (``asgi_app``: uvicorn).

Routes (query string ``test``, ``src``, ``seq``):

- ``/track``: ``track()`` one event ``{"id", "src", "seq", "pid"}``;
- ``/pid``: nothing tracked (readiness);
- ``/stats``: ``client.stats()`` of the pipeline this worker uses.

Every answer is JSON with the worker's ``pid``. A request whose ``test`` is not this
server's ``TRUBRICS_MP_TEST_ID`` gets 421 and tracks nothing: with SO_REUSEPORT
(granian) another test's server could share a port for a moment.

The ASGI app closes its client in the lifespan shutdown, as the deployment pages
recommend (uvicorn workers die by the signal they re-raise: no ``atexit`` runs),
and prints ``TRUBRICS-TEST-LIFESPAN-CLOSED pid=N ok=BOOL``; with
``TRUBRICS_TEST_LIFESPAN_CLOSE=0`` it does not close it (and prints nothing).
"""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs

from servers_client import TEST_ID, client, say, track

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
REASONS = {200: "OK", 404: "Not Found", 421: "Misdirected Request"}
CLOSE_IN_LIFESPAN = os.environ.get("TRUBRICS_TEST_LIFESPAN_CLOSE", "1") == "1"


def dispatch(path: str, query: str) -> tuple[int, dict[str, Any]]:
    params = {k: v[0] for k, v in parse_qs(query).items()}
    answer: dict[str, Any] = {"pid": os.getpid()}
    if params.get("test") != TEST_ID:
        return 421, answer
    if path == "/track":
        track(params.get("src", "none"), int(params.get("seq", "0")))
    elif path == "/stats":
        answer["stats"] = client.stats().as_dict()
    elif path != "/pid":
        return 404, answer
    return 200, answer


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    status, answer = dispatch(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    start_response(f"{status} {REASONS[status]}", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if CLOSE_IN_LIFESPAN:
                    ok = client.close(timeout=10)
                    say(f"TRUBRICS-TEST-LIFESPAN-CLOSED pid={os.getpid()} ok={ok}")
                await send({"type": "lifespan.shutdown.complete"})
                return
    status, answer = dispatch(scope["path"], scope.get("query_string", b"").decode())
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
