"""The client every app of this directory shares, made from the environment the test sets.

``TRUBRICS_TEST_URL`` is the local collector, ``TRUBRICS_TEST_OPTIONS`` JSON keyword
arguments of ``Trubrics``. ``TRUBRICS_MP_TEST_ID`` (the test's marker, also read by
the test's census of flusher processes) must come with every request or job: one
meant for another test's server is refused, never tracked. The client's logger
writes warnings and errors to stderr, so the test sees any of ours.

The client is made when this module is first imported: in the process that loads
the app (a uvicorn, granian or gunicorn worker, an RQ work horse, a dramatiq worker
process), or in the master with gunicorn's ``--preload``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from trubrics_mp import Trubrics

API_KEY = "test-api-key-servers-7c41a9"
TEST_ID = os.environ.get("TRUBRICS_MP_TEST_ID", "")


def say(line: str) -> None:
    """Print ``line`` with one write(2): lines of concurrent processes never interleave."""
    os.write(1, (line + "\n").encode())


def _logger() -> logging.Logger:
    logger = logging.getLogger("trubrics")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s [pid %(process)d] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    return logger


client = Trubrics(
    API_KEY,
    os.environ["TRUBRICS_TEST_URL"],
    logger=_logger(),
    **json.loads(os.environ.get("TRUBRICS_TEST_OPTIONS", "{}")),
)


def track(src: str, seq: int, **extra: Any) -> None:
    """One event whose ``id`` property is unique within the test."""
    properties = {"id": f"{src}:{seq}", "src": src, "seq": seq, "pid": os.getpid(), **extra}
    client.track(user_id=f"user-{src}", event="Host event", properties=properties)
