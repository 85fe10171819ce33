"""Applications for the disk spool's process tests, each run as its own Python process.

``python -m support.spool_scenarios NAME JSON_ARGS`` (with ``tests/`` on the
path), as ``support.scenarios``: it reports by printing JSON lines on stdout,
and every event carries ``properties = {"src": <label>, "seq": <n>}``.
"""

from __future__ import annotations

import json
import sys
import time

from support.scenarios import AppRunner, Args, emit, make_client


def steady(args: Args) -> None:
    """Track ``per_tick`` events every ``tick_s`` for ``seconds``, then flush and report
    what was tracked, what this process counted as lost (``dropped``) and what the
    whole pipeline did (``pipeline``, the flusher's counts added)."""
    client = make_client(args)
    src, seq = args["src"], 0
    end = time.monotonic() + args["seconds"]
    while time.monotonic() < end:
        for _ in range(args["per_tick"]):
            client.track(user_id="u", event="steady", properties={"src": src, "seq": seq})
            seq += 1
        time.sleep(args["tick_s"])  # an application doing other work between events
    flushed = client.flush(timeout=args["flush_timeout_s"])
    mine = client.stats(flusher=False).dropped  # this process's own counts
    emit(src=src, tracked=seq, flushed=flushed, dropped=mine, pipeline=client.stats().dropped)
    client.close(timeout=30)


SCENARIOS = {f.__name__: f for f in (steady,)}


class SpoolRunner(AppRunner):
    """Runs these scenarios as separate processes against one collector."""

    module = "support.spool_scenarios"


def main() -> None:
    name, payload = sys.argv[1], json.loads(sys.argv[2])
    SCENARIOS[name](payload)


if __name__ == "__main__":
    main()
