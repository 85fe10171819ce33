"""HTTP traffic and output checks for tests that run a real host server (gunicorn, uWSGI...).

The servers themselves run as ``support.processes.ServerProcess``.

- ``drive(url, n_requests, concurrency) -> list[Reply]``: GET ``url`` with ``{seq}``
  replaced by 0..n-1, from a few threads; ``Reply(seq, status, body)`` in seq order
  (status 0: no HTTP answer).
- ``wait_http(url, deadline_s)``: poll until ``url`` answers 200.
- ``assert_no_traceback(text, allow=())``, ``tracebacks(text)``.
"""

from __future__ import annotations

import concurrent.futures
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import NamedTuple

from support.processes import poll_until

DEFAULT_DEADLINE_S = 60.0
HTTP_TIMEOUT_S = 30.0


class Reply(NamedTuple):
    seq: int
    status: int
    body: str


def get(url: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, str]:
    """One GET; an HTTP error status is returned, a connection error is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as error:
        return 0, repr(error)


def drive(url: str, n_requests: int, concurrency: int = 4, start: int = 0) -> list[Reply]:
    """GET ``url`` (``{seq}`` replaced by start..start+n-1) from ``concurrency`` threads."""

    def one(seq: int) -> Reply:
        status, body = get(url.replace("{seq}", str(seq)))
        return Reply(seq, status, body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(start, start + n_requests)))


def wait_http(url: str, deadline_s: float = DEFAULT_DEADLINE_S) -> str:
    """Poll ``url`` until it answers 200; returns the body."""
    last: list[tuple[int, str]] = []

    def answered() -> bool:
        last[:] = [get(url, timeout=5.0)]
        return last[0][0] == 200

    poll_until(answered, deadline_s, lambda: f"{url} to answer 200 (last: {last})", interval=0.1)
    return last[0][1]


def tracebacks(text: str) -> list[str]:
    """Every Python traceback in ``text``, each up to its exception line."""
    found, current = [], None
    for line in text.splitlines():
        if "Traceback (most recent call last)" in line:
            current = [line]
        elif current is not None:
            current.append(line)
            if line and not line[0].isspace():  # the exception line ends it
                found.append("\n".join(current))
                current = None
    if current is not None:
        found.append("\n".join(current))
    return found


def assert_no_traceback(text: str, allow: Sequence[str] = ()) -> None:
    """Fail if ``text`` (a server's output) holds a traceback none of ``allow`` matches.

    ``allow``: regexes for tracebacks the host itself prints by design (say
    gunicorn's ``SystemExit: 1`` when it aborts a worker that timed out).
    """
    for block in tracebacks(text):
        if not any(re.search(pattern, block) for pattern in allow):
            raise AssertionError(f"a traceback was printed:\n{block}")
