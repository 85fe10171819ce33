"""A small WSGI application that tracks one event per request.

Routes (query string ``src``, ``seq``):

- ``/track``: ``client.track()`` with properties ``{"src": src, "seq": seq}``;
- ``/llm``: ``client.track_llm()`` with the same properties;
- ``/sleep``: track, then sleep ``s`` seconds (to be killed by gunicorn's timeout);
- ``/stats``: ``client.stats()`` (pipeline-wide, from the flusher this worker uses).

Every answer is JSON with the worker's ``pid``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from analytics import client, say


def dispatch(path: str, query: str) -> tuple[int, dict[str, Any]]:
    params = {k: v[0] for k, v in parse_qs(query).items()}
    src, seq = params.get("src", "none"), int(params.get("seq", "0"))
    answer: dict[str, Any] = {"pid": os.getpid()}
    properties = {"src": src, "seq": seq}
    if path == "/track":
        client.track(user_id=f"user-{src}", event="Request", properties=properties)
    elif path == "/llm":
        client.track_llm(
            user_id=f"user-{src}",
            prompt=f"prompt {seq}",
            generation=f"generation {seq}",
            assistant_id="gpt-4o",
            properties=properties,
            latency=0.25,
        )
    elif path == "/sleep":
        client.track(user_id=f"user-{src}", event="Slow request", properties=properties)
        say(f"SLEEPING pid={os.getpid()}")
        time.sleep(float(params.get("s", "120")))
    elif path == "/stats":
        answer["stats"] = client.stats().as_dict()
    elif path != "/pid":
        return 404, answer
    return 200, answer


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    status, answer = dispatch(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    body = json.dumps(answer).encode()
    reason = "OK" if status == 200 else "Not Found"
    start_response(f"{status} {reason}", [("Content-Type", "application/json")])
    return [body]
