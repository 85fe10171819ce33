"""The application's analytics module: creates the one ``Trubrics`` client.

Settings come from the environment the test gives gunicorn:
``TRUBRICS_TEST_URL`` (the local collector) and ``TRUBRICS_TEST_OPTIONS`` (JSON
keyword arguments). An ``atexit`` marker registered *before* the client is made
runs *after* the client's own exit handler (LIFO): a process that prints it left
through a normal exit with its events handed over, not through SIGKILL.
"""

from __future__ import annotations

import atexit
import json
import os

from trubrics_mp import Trubrics

API_KEY = "test-api-key-gunicorn-5e1d07"
EXIT_MARKER = "TRUBRICS-TEST-EXIT pid={pid}"


def say(line: str) -> None:
    """Print ``line`` with one write(2): lines of concurrent workers never interleave."""
    os.write(1, (line + "\n").encode())


def _exit_marker() -> None:
    say(EXIT_MARKER.format(pid=os.getpid()))


atexit.register(_exit_marker)

client = Trubrics(
    API_KEY,
    os.environ["TRUBRICS_TEST_URL"],
    **json.loads(os.environ.get("TRUBRICS_TEST_OPTIONS", "{}")),
)
