"""The demo's load generator (threads, ``http.client``) and its progress bar.

Each of ``concurrency`` threads keeps one ``http.client.HTTPConnection`` and
sends ``POST /chat`` requests numbered 0..n-1 (each number once, in whatever
order the threads take them). Caveat: gunicorn's sync workers close the
connection after every response, so ``http.client`` reconnects for each
request; with a keep-alive server the connection is reused.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
from typing import IO, Any, Optional

HTTP_TIMEOUT_S = 30.0
MAX_ERRORS_KEPT = 5
USERS = 25
PROMPTS = (
    "How do I reset my password?",
    "Summarise this contract in three bullet points.",
    "Write a haiku about connection pooling.",
    "What is the capital of Australia?",
    "Explain fork safety to a new engineer.",
)


def chat_request(seq: int) -> dict[str, Any]:
    """The JSON body of request ``seq``: a few users, each with a few threads."""
    user = seq % USERS
    return {
        "seq": seq,
        "user_id": f"demo-user-{user}",
        "thread_id": f"demo-thread-{user}-{seq // (USERS * 4)}",
        "prompt": PROMPTS[seq % len(PROMPTS)],
    }


@dataclasses.dataclass
class LoadResult:
    """What the load generator did: ``ok_seqs`` are the requests answered 200."""

    sent: int
    ok_seqs: list[int]
    errors: list[str]
    failed: int
    seconds: float

    @property
    def ok(self) -> int:
        return len(self.ok_seqs)


class LoadGenerator:
    """``n_requests`` POSTs to ``http://host:port/chat`` from ``concurrency`` threads."""

    def __init__(self, host: str, port: int, n_requests: int, concurrency: int) -> None:
        self.host, self.port = host, port
        self.n_requests = n_requests
        self.concurrency = max(1, min(concurrency, n_requests))
        self._seqs = iter(range(n_requests))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ok: list[int] = []
        self._errors: list[str] = []
        self._failed = 0
        self._started_at = 0.0
        self._ended_at: Optional[float] = None

    def start(self) -> None:
        self._started_at = time.monotonic()
        for index in range(self.concurrency):
            thread = threading.Thread(target=self._run, name=f"demo-load-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    @property
    def done(self) -> int:
        with self._lock:
            return len(self._ok) + self._failed

    @property
    def elapsed(self) -> float:
        end = self._ended_at if self._ended_at is not None else time.monotonic()
        return end - self._started_at

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every thread; True when all are done."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.running():
            return False
        if self._ended_at is None:
            self._ended_at = time.monotonic()
        return True

    def stop(self, timeout: float = HTTP_TIMEOUT_S) -> None:
        """Ask the threads to stop after their current request, and wait for them."""
        self._stop.set()
        self.wait(timeout)

    def result(self) -> LoadResult:
        with self._lock:
            ok, errors, failed = sorted(self._ok), list(self._errors), self._failed
        return LoadResult(len(ok) + failed, ok, errors, failed, self.elapsed)

    def _next_seq(self) -> Optional[int]:
        if self._stop.is_set():
            return None
        with self._lock:
            return next(self._seqs, None)

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)
        try:
            for seq in iter(self._next_seq, None):
                error = _post(connection, seq)
                with self._lock:
                    if error is None:
                        self._ok.append(seq)
                    else:
                        self._failed += 1
                        if len(self._errors) < MAX_ERRORS_KEPT:
                            self._errors.append(f"request {seq}: {error}")
        finally:
            connection.close()


def _post(connection: http.client.HTTPConnection, seq: int) -> Optional[str]:
    """Send request ``seq`` on ``connection``; None on a 200, else what went wrong."""
    body = json.dumps(chat_request(seq)).encode("utf-8")
    try:
        connection.request("POST", "/chat", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()  # the next request reconnects
        return f"{type(exc).__name__}: {exc}"
    return None if response.status == 200 else f"HTTP {response.status}"


class Progress:
    """A progress bar: one ``\\r``-rewritten line on a TTY, else a line per 10 %."""

    WIDTH = 30

    def __init__(self, total: int, stream: IO[str], tty: Optional[bool] = None) -> None:
        self.total = max(1, total)
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._last_tenth = -1
        self._last_line = ""

    def line(self, done: int, elapsed: float) -> str:
        filled = self.WIDTH * done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        rate = done / elapsed if elapsed > 0 else 0.0
        width = len(str(self.total))
        percent = 100 * done // self.total
        return f"requests [{bar}] {done:>{width}}/{self.total} {percent:3d}%  {rate:6.0f} req/s"

    def update(self, done: int, elapsed: float) -> None:
        text = self.line(done, elapsed)
        if self.tty:
            if text != self._last_line:
                self.stream.write("\r" + text)
                self.stream.flush()
        else:
            tenth = 10 * done // self.total
            if tenth > self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(text + "\n")
                self.stream.flush()
        self._last_line = text

    def finish(self, done: int, elapsed: float) -> None:
        """Show the final state and end the line."""
        self.update(done, elapsed)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_with_progress(generator: LoadGenerator, progress: Progress, every_s: float = 0.1) -> None:
    """Start ``generator`` and refresh ``progress`` until every thread is done."""
    generator.start()
    try:
        progress.update(0, 0.0)
        while not generator.wait(every_s):
            progress.update(generator.done, generator.elapsed)
    finally:
        generator.stop()
        progress.finish(generator.done, generator.elapsed)


__all__ = ["LoadGenerator", "LoadResult", "Progress", "chat_request"]
