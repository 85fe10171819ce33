"""A dramatiq broker module with one actor that tracks events (``dramatiq servers_dramatiq``).

The broker is Redis (``TRUBRICS_TEST_BROKER``). dramatiq's main process imports
nothing of the app: each worker process (forked, or spawned with ``--use-spawn``)
imports this module, so each makes its own client. The test enqueues messages by
actor name from its own broker object and never imports this module.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from servers_client import TEST_ID, say, track

ACTOR = "trubrics_test_track"

_redis_broker: Any = RedisBroker  # its __init__ has no type hints
broker = _redis_broker(url=os.environ["TRUBRICS_TEST_BROKER"])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR, max_retries=0)
def track_actor(test_id: str, src: str, count: int, hold_s: float = 0.0) -> None:
    """Track ``count`` events ``src:0..count-1``, say so, then hold for ``hold_s`` seconds
    (so that an idle worker process, polling with a backoff, gets messages too)."""
    if test_id != TEST_ID:
        raise RuntimeError(f"a message of test {test_id} reached the worker of test {TEST_ID}")
    for seq in range(count):
        track(src, seq)
    say(f"TRUBRICS-TEST-TRACKED src={src} pid={os.getpid()}")
    time.sleep(hold_s)
