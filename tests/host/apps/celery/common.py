"""What the Celery test apps share: settings from the environment, and the tasks.

The test starts ``celery -A tasks_import worker`` or ``celery -A tasks_signals
worker`` with this directory on ``PYTHONPATH`` and these variables set:
``TRUBRICS_TEST_BROKER`` (Redis URL, also the result backend),
``TRUBRICS_TEST_HOST`` (the local collector), ``TRUBRICS_TEST_FLUSH_AT``,
``TRUBRICS_TEST_FLUSH_INTERVAL``. Every tracked event carries
``{"src", "seq", "pid"}`` so the test can count deliveries and see which
process tracked it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from celery import Celery

from trubrics_mp import Trubrics

API_KEY = "celery-test-api-key-41d2"
TRACK = "trubrics_test.track"
HANG = "trubrics_test.hang"
STATS = "trubrics_test.stats"


def make_app(name: str) -> Celery:
    broker = os.environ["TRUBRICS_TEST_BROKER"]
    app = Celery(name, broker=broker, backend=broker)
    app.conf.broker_connection_retry_on_startup = True
    app.conf.worker_hijack_root_logger = True
    return app


def make_client() -> Trubrics:
    logging.getLogger("trubrics").setLevel(logging.WARNING)  # show our warnings
    return Trubrics(
        API_KEY,
        os.environ["TRUBRICS_TEST_HOST"],
        flush_at=int(os.environ["TRUBRICS_TEST_FLUSH_AT"]),
        flush_interval=float(os.environ["TRUBRICS_TEST_FLUSH_INTERVAL"]),
    )


def _track(client: Trubrics, src: str, count: int) -> int:
    pid = os.getpid()
    for seq in range(count):
        properties = {"src": src, "seq": seq, "pid": pid}
        client.track(user_id=f"user-{src}", event="Celery task", properties=properties)
    return pid


def register_tasks(app: Celery, get_client: Callable[[], Trubrics]) -> None:
    """Define the three tasks the tests send by name."""

    @app.task(name=TRACK)
    def track(src: str, count: int, pause: float = 0.0) -> int:
        pid = _track(get_client(), src, count)
        time.sleep(pause)  # lets the other pool processes take tasks too
        return pid

    @app.task(name=HANG)
    def hang(src: str, count: int) -> int:
        pid = _track(get_client(), src, count)
        time.sleep(600)  # until the hard time limit kills this pool process
        return pid

    @app.task(name=STATS)
    def stats() -> dict[str, Any]:
        found = get_client().stats().as_dict()
        found["task_pid"] = os.getpid()
        return found
