"""How many flusher processes served a host, and the checks of "one pipeline per machine".

A host test puts a marker of its own in the server's environment
(:func:`marker_env`: ``TRUBRICS_MP_TEST_ID=<uuid>``, with ``TRUBRICS_MP_LINGER``);
every process the server starts inherits it, flushers included, whether they stay
children of the host or are reparented elsewhere. The census reads ``/proc``:

- :func:`flushers` ``(test_id)``: the running processes whose command line holds
  ``trubrics-mp-flusher`` and whose ``/proc/PID/environ`` holds the marker;
- :class:`Census`: a thread that samples :func:`flushers` while the host runs and
  keeps every pid it saw (``seen``) and the most seen at once (``most``); a
  flusher that lived less than one sample may be missed, never invented;
- :func:`wait_no_flusher`: poll until no flusher with the marker runs (part of
  every host test's "nothing left" check);
- :func:`assert_one_pipeline`: what issue 10 promises for every host: one flusher
  process served it all, and (with a ``flush_interval`` longer than the test) the
  number of POSTs is events / ``flush_at`` rounded up, plus at most one.

Tests whose assertions only hold once issue 10 is done carry the
``pipeline_per_machine`` marker (``tests/conftest.py`` turns it into a strict xfail).
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from typing import Optional

from support.collector import CollectorProcess
from support.processes import is_running, poll_until

TEST_ID_VAR = "TRUBRICS_MP_TEST_ID"
LINGER_VAR = "TRUBRICS_MP_LINGER"
# A flusher lingers this long after its last client left.
TEST_LINGER_S = "0.3"
FLUSHER_TAG = b"trubrics-mp-flusher"  # in every flusher's argv (trubrics_mp._spawn)
FLUSHER_COMM = b"trubrics-flush\n"  # and its name (trubrics_mp._process.FLUSHER_COMM)
SAMPLE_S = 0.05
DEADLINE_S = 60.0


def new_test_id() -> str:
    return uuid.uuid4().hex


def marker_env(test_id: str) -> dict[str, str]:
    """The variables a host test adds to its server's environment."""
    return {TEST_ID_VAR: test_id, LINGER_VAR: TEST_LINGER_S}


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:  # gone, or a zombie (whose environ reads empty or fails)
        return None


def flushers(test_id: str) -> set[int]:
    """Pids of the running flusher processes that carry ``test_id`` in their environment."""
    wanted = f"{TEST_ID_VAR}={test_id}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        cmdline = _read(f"/proc/{entry.name}/cmdline")
        if not cmdline or FLUSHER_TAG not in cmdline.split(b"\0"):
            continue
        if _read(f"/proc/{entry.name}/comm") != FLUSHER_COMM:
            continue  # its bootstrap (same command line), about to fork it and exit
        environ = _read(f"/proc/{entry.name}/environ")
        if environ and wanted in environ.split(b"\0") and is_running(int(entry.name)):
            found.add(int(entry.name))
    return found


class Census:
    """Samples the flushers of one test every ``SAMPLE_S`` from :meth:`start` to :meth:`stop`."""

    def __init__(self, test_id: str) -> None:
        self.test_id = test_id
        self.seen: set[int] = set()
        self.most = 0
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> Census:
        self._thread = threading.Thread(target=self._run, name="flusher census", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> set[int]:
        """One look (also called by the test at moments that matter); returns it."""
        now = flushers(self.test_id)
        with self._lock:
            self.seen |= now
            self.most = max(self.most, len(now))
            self.samples += 1
        return now

    def stop(self) -> None:
        """Stop sampling (idempotent); one last look first."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=DEADLINE_S)
        self.sample()

    def describe(self) -> str:
        with self._lock:
            seen = sorted(self.seen)
        return (
            f"{len(seen)} flusher pids seen in {self.samples} samples, at most {self.most} at once"
        )


def wait_no_flusher(test_id: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll until no flusher carrying ``test_id`` runs: each must leave by itself."""
    poll_until(
        lambda: not flushers(test_id),
        deadline_s,
        lambda: f"flushers {sorted(flushers(test_id))} of test {test_id} to exit",
        interval=0.1,
    )


def expected_posts(events: int, flush_at: int) -> int:
    """POSTs one flusher makes for ``events`` when only size (and the stop) cuts batches."""
    return math.ceil(events / flush_at)


def assert_one_pipeline(
    census: Census, collector: CollectorProcess, events: int, flush_at: int
) -> None:
    """Issue 10: one flusher process for the whole host, and batches shared by all its
    processes (so about events / ``flush_at`` POSTs, not one partial batch per process)."""
    census.stop()
    assert len(census.seen) == 1, f"one flusher for the whole host: {census.describe()}"
    posts = len(collector.batches())
    ideal = expected_posts(events, flush_at)
    assert ideal <= posts <= ideal + 1, (
        f"{posts} POSTs for {events} events with flush_at {flush_at}: one pipeline makes "
        f"{ideal} (one more at most); {census.describe()}"
    )
