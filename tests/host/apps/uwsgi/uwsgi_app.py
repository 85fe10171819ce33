"""A WSGI app that tracks one event per request, run by the real uWSGI server.

- ``GET /track?src=S&seq=N[&pad=BYTES]``: ``track()`` one event ``{"src": S, "seq": N}``.
- ``GET /sleep?src=S&seq=N&s=SECONDS``: track, then sleep (to meet harakiri).
- ``GET /stats``: this worker's pid and ``trubrics.stats()`` as JSON.
- ``GET /local``: events this worker buffers itself (the flusher is not asked).

On import it prints ``listening on http://HOST:PORT`` (the socket uWSGI bound,
port 0 included) for the test harness.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

import uwsgi
from uwsgi_analytics import trubrics

Environ = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _print_address() -> None:
    bound = socket.socket(fileno=os.dup(uwsgi.sockets[0]))
    try:
        host, port = bound.getsockname()[:2]
    finally:
        bound.close()
    print(f"listening on http://{host}:{port}", flush=True)


def _reply(start_response: StartResponse, body: dict[str, Any]) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ.get("PATH_INFO", "/")
    if path in ("/track", "/sleep"):
        properties: dict[str, Any] = {"src": query["src"], "seq": int(query["seq"])}
        if "pad" in query:  # bigger events fill the shared queue sooner
            properties["pad"] = "x" * int(query["pad"])
        trubrics.track(user_id=f"user-{query['src']}", event="Request", properties=properties)
        if path == "/sleep":
            time.sleep(float(query.get("s", "30")))
        return _reply(start_response, {"pid": os.getpid()})
    if path == "/stats":
        stats = trubrics.stats().as_dict()
        body = {"pid": os.getpid(), "has_threads": uwsgi.has_threads, "stats": stats}
        return _reply(start_response, body)
    if path == "/local":
        return _reply(
            start_response, {"pid": os.getpid(), "buffered": trubrics.stats(flusher=False).buffered}
        )
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


_print_address()
