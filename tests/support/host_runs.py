"""One real server run by a host test, and the checks every such test ends with.

Used by the host tests of servers that start their workers themselves (uvicorn,
granian, gunicorn with gevent, RQ, dramatiq); the apps are in
``tests/host/apps/servers/``. A :class:`HostRun` owns:

- the test's marker (``TRUBRICS_MP_TEST_ID``, see ``support/pipelines.py``), put
  with the collector's URL and the client's options in the server's environment
  (:meth:`HostRun.env`), and the census of the flushers that carry it, sampled
  from :meth:`HostRun.start` to :meth:`HostRun.assert_nothing_left`;
- :meth:`HostRun.drive`: HTTP traffic, every request answered 200 (a 421 means the
  request reached another test's server on a shared port: it tracked nothing and
  is sent again);
- :meth:`HostRun.stop`: SIGTERM to the main process, or a signal to the whole
  process group (Ctrl-C), then a generous deadline;
- the checks: :meth:`assert_clean_stop` (not killed, exit status, no traceback, no
  warning or error of ours, the API key never printed), :meth:`delivered_once`
  (every event exactly once, each ``id`` property once), :meth:`wait_no_zombie`,
  :meth:`assert_nothing_left` (every flusher with the marker gone);
- :meth:`report`: one ``HOST-RESULT {json}`` line (``pytest -rP`` shows it) with
  sent / delivered / duplicates, POSTs, flusher processes seen (in all, at once, and
  still running when the host's main process had exited), stop seconds.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import time
from collections.abc import Collection, Sequence
from typing import Any, Optional

import psutil

from support.checks import counts, expected_keys, wait_delivered
from support.collector import CollectorProcess
from support.hosts import assert_no_traceback, drive
from support.pipelines import Census, marker_env, new_test_id, wait_no_flusher
from support.processes import ServerProcess, poll_until

DEADLINE_S = 60.0
RETRIES = 3
API_KEY = "test-api-key-servers-7c41a9"  # the one in apps/servers/servers_client.py
OURS = re.compile(r"^(WARNING|ERROR|CRITICAL) trubrics", re.M)
Keys = set[tuple[str, int]]


class HostRun:
    """A server started by one test, its census, and its checks."""

    def __init__(self, name: str, collector: CollectorProcess, options: dict[str, Any]) -> None:
        self.name = name
        self.collector = collector
        self.options = options
        self.test_id = new_test_id()
        self.census = Census(self.test_id)
        self.server: Optional[ServerProcess] = None
        self.signals: list[str] = []
        self.flushers_at_exit: Optional[int] = None

    def env(self, **extra: str) -> dict[str, str]:
        """What the server's environment gets on top of the test process's own."""
        found = {
            "TRUBRICS_TEST_URL": self.collector.url,
            "TRUBRICS_TEST_OPTIONS": json.dumps(self.options),
            "PYTHONDONTWRITEBYTECODE": "1",
            **marker_env(self.test_id),
        }
        found.update(extra)
        return found

    @property
    def host(self) -> ServerProcess:
        if self.server is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.server

    def start(self, server: ServerProcess, deadline_s: float = DEADLINE_S) -> ServerProcess:
        self.census.start()
        self.server = server
        return server.start(deadline_s)

    def kill(self) -> None:
        """Clean-up path: whatever still runs of the server's group is SIGKILLed."""
        if self.server is not None:
            self.server.kill()
        self.census.stop()

    # -- traffic ----------------------------------------------------------------------
    def drive(
        self, url: str, src: str, n_requests: int, concurrency: int = 8, start: int = 0
    ) -> set[int]:
        """GET ``url/track`` for ``src:start..start+n-1``; every request answered 200 once;
        the pids of the workers that answered."""
        template = f"{url}/track?test={self.test_id}&src={src}&seq={{seq}}"
        replies = {r.seq: r for r in drive(template, n_requests, concurrency, start=start)}
        for _ in range(RETRIES):
            misdirected = sorted(seq for seq, r in replies.items() if r.status == 421)
            for seq in misdirected:
                replies[seq] = drive(template, 1, 1, start=seq)[0]
        failed = [r for r in replies.values() if r.status != 200]
        assert not failed, f"{len(failed)} of {n_requests} requests failed, e.g. {failed[:3]}"
        return {json.loads(r.body)["pid"] for r in replies.values()}

    def drive_every_worker(
        self, url: str, src: str, n_requests: int, workers: int, deadline_s: float = 60.0
    ) -> tuple[set[int], int]:
        """:meth:`drive` ``n_requests``, then as many more (new sequence numbers) until
        ``workers`` distinct workers answered: a host may hand a burst to one worker.
        The pids seen and the number of requests sent in all."""
        seen = self.drive(url, src, n_requests)
        sent = n_requests
        give_up_at = time.monotonic() + deadline_s
        while len(seen) < workers and time.monotonic() < give_up_at:
            seen |= self.drive(url, src, n_requests, start=sent)
            sent += n_requests
        return seen, sent

    # -- stopping ---------------------------------------------------------------------
    def stop(self, sig: int = signal.SIGTERM, group: bool = False) -> float:
        """``sig`` to the main process (or its whole group); the host must exit by itself."""
        host = self.host
        self.signals.append(f"{'group ' if group else ''}{signal.Signals(sig).name}")
        if group:
            host.signal_group(sig)
        host.stop(DEADLINE_S, sig=None if group else sig)
        self.flushers_at_exit = len(self.census.sample())  # still delivering, or lingering
        assert not host.killed, f"{host.name}: no exit {DEADLINE_S} s after {self.signals[-1]}"
        assert host.stop_seconds is not None
        return host.stop_seconds

    def assert_clean_stop(self, returncode: int = 0, allow: Sequence[str] = ()) -> str:
        """The stop was graceful; returns the server's output."""
        host = self.host
        output = host.output_text
        assert not host.killed, output
        assert host.returncode == returncode, f"exit status {host.returncode}:\n{host.tail()}"
        assert_no_traceback(output, allow)
        assert not OURS.findall(output), f"trubrics_mp warned or failed:\n{output}"
        assert API_KEY not in output
        return output

    def wait_no_zombie(self) -> None:
        """No exited process waits to be reaped under the running host (poll: a process
        that just exited is a zombie until its parent's next wait)."""

        def zombies() -> list[int]:
            try:
                children = psutil.Process(self.host.pid).children(recursive=True)
            except psutil.Error:
                return []
            found = []
            for child in children:
                try:
                    if child.status() == psutil.STATUS_ZOMBIE:
                        found.append(child.pid)
                except psutil.Error:
                    pass
            return found

        poll_until(lambda: not zombies(), DEADLINE_S, lambda: f"zombies {zombies()} to be reaped")

    def assert_nothing_left(self) -> None:
        """Every flusher carrying the marker leaves by itself (the suite's leak check then
        looks for any other process of the test)."""
        self.census.stop()
        wait_no_flusher(self.test_id, DEADLINE_S)
        assert self.host.poll() is not None

    # -- deliveries ---------------------------------------------------------------------
    def delivered_once(
        self, required: Keys, optional: Collection[tuple[str, int]] = ()
    ) -> list[dict[str, Any]]:
        """Every required event stored exactly once, optional ones at most once, nothing
        else; the ``id`` property of each stored event is ``src:seq`` and unique."""
        events = wait_delivered(self.collector, required, set(optional))
        ids = collections.Counter(e["properties"]["id"] for e in events)
        duplicated = [i for i, n in ids.items() if n > 1]
        assert not duplicated, f"ids stored more than once: {duplicated[:10]}"
        for event in events:
            properties = event["properties"]
            assert properties["id"] == f"{properties['src']}:{properties['seq']}", properties
        return events

    def delivered_exactly(self, expected: dict[str, int]) -> list[dict[str, Any]]:
        return self.delivered_once(expected_keys(expected))

    def report(self, sent: int, **extra: Any) -> dict[str, Any]:
        """Print (and return) the figures of this run."""
        self.census.stop()
        events = self.collector.events()
        seen = counts(events)
        row = {
            "host": self.name,
            "sent": sent,
            "delivered": len(seen),
            "duplicates": sum(n - 1 for n in seen.values()),
            "posts": len(self.collector.batches()),
            "flushers_seen": len(self.census.seen),
            "flushers_at_once": self.census.most,
            "stop": " then ".join(self.signals),
            "stop_s": round(self.host.stop_seconds or 0.0, 2),
            "flushers_after_exit": self.flushers_at_exit,
            **extra,
        }
        print("HOST-RESULT " + json.dumps(row))
        return row
