"""The same routes as ``app.py``, as an ASGI application (for UvicornWorker).

uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done, so
a UvicornWorker dies by that signal: neither gunicorn's ``worker_exit`` hook nor
``atexit`` runs there. As the deployment page says, the app closes its client
in the lifespan shutdown instead: the worker's buffered events are handed over
and delivered (the flusher itself is nobody's to stop).
"""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable

from analytics import client, say
from app import dispatch

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                ok = client.close(timeout=10)
                say(f"TRUBRICS-TEST-LIFESPAN-CLOSED pid={os.getpid()} ok={ok}")
                await send({"type": "lifespan.shutdown.complete"})
                return
    status, answer = dispatch(scope["path"], scope.get("query_string", b"").decode())
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
