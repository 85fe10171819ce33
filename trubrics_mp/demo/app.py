"""The demo's chat-style WSGI application, as gunicorn loads it.

``POST /chat`` with a JSON body ``{"seq", "user_id", "thread_id", "prompt"}``
"generates" a canned answer (a short sleep stands in for the model) and
tracks two events, the way a chat product would:

- ``track()``: ``"User prompt"`` with ``$text`` and ``$thread_id``;
- ``track_llm()``: the prompt/generation pair with ``assistant_id``,
  ``latency`` (seconds) and ``thread_id``.

Both carry ``demo_run`` (this run), ``demo_id`` (unique per event, so the
demo can count duplicates) and ``worker_pid`` (the gunicorn worker that
tracked it). Each worker times its own ``track()``/``track_llm()`` calls with
``time.perf_counter_ns`` and writes them, at exit, to
``<report_dir>/worker-<pid>.json`` (:func:`write_report`, called from the
``worker_exit`` hook of ``gunicorn_conf``).

gunicorn loads the app through the factory :func:`create_app` (with
``preload_app = True``, once, in the master), so the master creates the
client and owns the one flusher every worker inherits. Caveat: only one
client per process; a second :func:`create_app` call replaces it.
"""

from __future__ import annotations

import array
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from trubrics_mp import Trubrics

DEMO_API_KEY = "demo-key-not-secret"  # the local collector checks only that one is sent
ASSISTANT_ID = "demo-assistant"
THINK_S = 0.002  # the "model": enough that concurrent requests spread over the workers
MAX_BODY_BYTES = 65_536

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _State:
    client: Optional[Trubrics] = None
    run_id = ""
    report_dir: Optional[Path] = None
    track_ns: array.array[int] = array.array("q")
    track_llm_ns: array.array[int] = array.array("q")
    timings_pid = 0  # the process the timings belong to (reset after fork)


def create_app(host: str, report_dir: str, run_id: str) -> WSGIApp:
    """gunicorn app factory: create the client (owner: this process) and the app."""
    _State.client = Trubrics(DEMO_API_KEY, host=host)
    _State.run_id = run_id
    _State.report_dir = Path(report_dir)
    return app


def current_client() -> Trubrics:
    """The client :func:`create_app` made (for ``integrations.gunicorn.configure``)."""
    if _State.client is None:
        raise RuntimeError("trubrics_mp demo: create_app() has not run in this process")
    return _State.client


def _timings() -> tuple[array.array[int], array.array[int]]:
    """This process's timing arrays; a forked worker starts with empty ones."""
    if _State.timings_pid != os.getpid():
        _State.timings_pid = os.getpid()
        _State.track_ns = array.array("q")
        _State.track_llm_ns = array.array("q")
    return _State.track_ns, _State.track_llm_ns


def answer(prompt: str) -> str:
    """The canned "generation" for ``prompt``."""
    return f"You asked {len(prompt.split())} words' worth: here is a thoughtful answer."


def chat(request: dict[str, Any]) -> dict[str, Any]:
    """Handle one chat turn: generate, then track the prompt and the generation."""
    client = current_client()
    track_ns, track_llm_ns = _timings()
    seq, user_id = int(request["seq"]), str(request["user_id"])
    thread_id, prompt = str(request["thread_id"]), str(request["prompt"])
    started = time.perf_counter()
    time.sleep(THINK_S)
    generation = answer(prompt)
    latency = time.perf_counter() - started
    pid = os.getpid()
    common = {"demo_run": _State.run_id, "worker_pid": pid}
    before = time.perf_counter_ns()
    client.track(
        user_id,
        "User prompt",
        {"$text": prompt, "$thread_id": thread_id, "demo_id": f"{seq}/prompt", **common},
    )
    between = time.perf_counter_ns()
    client.track_llm(
        user_id=user_id,
        prompt=prompt,
        generation=generation,
        assistant_id=ASSISTANT_ID,
        properties={"demo_id": f"{seq}/llm", **common},
        latency=latency,
        thread_id=thread_id,
    )
    after = time.perf_counter_ns()
    track_ns.append(between - before)
    track_llm_ns.append(after - between)
    return {"seq": seq, "generation": generation, "worker_pid": pid}


def _respond(start_response: StartResponse, status: str, payload: Any) -> list[bytes]:
    body = json.dumps(payload).encode("utf-8")
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI callable: ``POST /chat`` only."""
    if environ.get("PATH_INFO") != "/chat" or environ.get("REQUEST_METHOD") != "POST":
        return _respond(start_response, "404 Not Found", {"detail": "POST /chat only"})
    try:
        size = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY_BYTES)
        request = json.loads(environ["wsgi.input"].read(size))
        return _respond(start_response, "200 OK", chat(request))
    except (ValueError, KeyError, TypeError) as exc:
        return _respond(start_response, "400 Bad Request", {"detail": str(exc)})


def write_report() -> Optional[Path]:
    """Write this worker's call timings to ``worker-<pid>.json``; returns the path.

    Does nothing (returns None) before :func:`create_app`.
    """
    if _State.report_dir is None:
        return None
    track_ns, track_llm_ns = _timings()
    path = _State.report_dir / f"worker-{os.getpid()}.json"
    report = {"pid": os.getpid(), "track_ns": list(track_ns), "track_llm_ns": list(track_llm_ns)}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(report), encoding="utf-8")
    os.replace(temporary, path)
    return path
