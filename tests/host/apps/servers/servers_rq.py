"""RQ jobs that track events, run by the stock ``rq worker`` (``--path`` this directory).

The test enqueues them by name (``servers_rq.track_job``), so the worker's main
process never imports this module: each work horse (a fresh fork per job) imports
it and makes its own client. A horse leaves through ``os._exit``: no ``atexit``
runs in it, and what ``track()`` handed to the kernel is all that counts.
"""

from __future__ import annotations

import os
import time

from servers_client import TEST_ID, say, track


def track_job(test_id: str, src: str, count: int, hold_s: float = 0.0) -> int:
    """Track ``count`` events ``src:0..count-1``, say so, then hold for ``hold_s`` seconds."""
    if test_id != TEST_ID:
        raise RuntimeError(f"a job of test {test_id} reached the worker of test {TEST_ID}")
    for seq in range(count):
        track(src, seq)
    say(f"TRUBRICS-TEST-TRACKED src={src} pid={os.getpid()} pgid={os.getpgrp()}")
    time.sleep(hold_s)
    return os.getpid()
