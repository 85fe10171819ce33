"""A process set up like a Celery prefork child starts the flusher, then leaves like one.

``python pdeathsig_starter.py URL N``: sets the parent-death signal to SIGKILL
exactly as Celery's ``process_initializer`` does, makes a client (so this
process, the first of its pipeline, starts the flusher), tracks N events with a
long flush interval, prints the flusher's pid and leaves through ``os._exit`` as
billiard children do. The flusher must outlive it and deliver the N events: it
would be SIGKILLed with its parent if it had inherited the parent-death signal.
"""

from __future__ import annotations

import os
import sys

from celery import platforms

from trubrics_mp import Trubrics


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    platforms.set_pdeathsig("SIGKILL")  # type: ignore[attr-defined]  # not in celery-types
    client = Trubrics("pdeathsig-test-key", url, flush_at=100, flush_interval=300)
    for seq in range(count):
        client.track(user_id="u", event="e", properties={"src": "pdeathsig", "seq": seq})
    pid = client.stats().flusher_pid
    print(pid if pid is not None else -1, flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
