"""Delivery: sender threads that own every batch from hand-over until it is settled.

Threads exist only inside the flusher process. The main loop hands batches
over with :meth:`Delivery.put` and later collects final outcomes with
:meth:`Delivery.take_settled`: delivered, or dropped with a reason. Retries
never reach the main loop: the sender that gets a retryable failure puts the
batch back at the head of the line and sets the pause, both under the lock,
before any thread can take another batch.

While the API fails, at most one batch per sender thread spends retries (the
ones already in flight when the failure began); after that only one batch
is in flight at a time (a probe) until an answer that is not a transient
failure comes back. Every other batch waits untouched.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import threading
import time
from typing import Callable, Optional

from ._batching import Batch
from ._http import Poster
from ._retry import Decision, Outcome, RetryPolicy


@dataclasses.dataclass(frozen=True)
class Settled:
    """The final outcome of a batch: ``reason`` is empty when it was delivered."""

    batch: Batch
    reason: str = ""
    last: Outcome = Outcome(200)

    @property
    def delivered(self) -> bool:
        return not self.reason


class Delivery:
    """Ready batches, oldest first, behind a pause gate, posted by ``senders`` threads.

    Invariants (all under ``_cond``): a batch is in exactly one place, the
    ready line, a sender's hands, or ``_settled``; no batch is taken while
    ``now < _paused_until``; while ``_failing``, at most one batch is in flight.
    """

    def __init__(
        self,
        poster: Poster,
        policy: RetryPolicy,
        senders: int,
        wake: Callable[[], None],
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._poster = poster
        self._policy = policy
        self._wake = wake
        self._log = logger
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: collections.deque[Batch] = collections.deque()
        self._settled: list[Settled] = []
        self._paused_until = 0.0
        self._failing = False
        self._in_flight = 0
        self._closed = False
        self.requests = 0
        self.retried_requests = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"trubrics-mp-sender-{i}", daemon=True)
            for i in range(senders)
        ]

    # -- the main loop's side ---------------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def put(self, batch: Batch) -> None:
        with self._cond:
            self._ready.append(batch)
            self._cond.notify()

    def take_settled(self) -> list[Settled]:
        """Final outcomes since the last call, in the order they came."""
        with self._cond:
            settled, self._settled = self._settled, []
        return settled

    def stop(self, timeout_s: float) -> None:
        """Stop taking batches, wait up to ``timeout_s`` for each sender, close the poster."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout_s)
        self._poster.close()

    # -- sender threads ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            outcome = self._post(batch)
            decision = self._policy.decide(
                outcome, batch.attempts, self._clock(), time.time(), random.random()
            )
            self._record(batch, outcome, decision)

    def _take(self) -> Optional[Batch]:
        with self._cond:
            while not self._closed:
                wait_s = self._paused_until - self._clock()
                probing = self._failing and self._in_flight > 0
                if self._ready and wait_s <= 0 and not probing:
                    self._in_flight += 1
                    return self._ready.popleft()
                self._cond.wait(timeout=wait_s if wait_s > 0 and not probing else None)
            return None

    def _post(self, batch: Batch) -> Outcome:
        batch.attempts += 1
        try:
            return self._poster.post(batch.endpoint, batch.body())
        except Exception as exc:  # a poster must not raise; a sender must not die
            self._log.exception("unexpected error posting to /%s", batch.endpoint)
            return Outcome(None, detail=repr(exc))

    def _record(self, batch: Batch, outcome: Outcome, decision: Decision) -> None:
        with self._cond:
            self.requests += 1
            self._in_flight -= 1
            if decision.action == "retry":
                self.retried_requests += 1
                self._failing = True
                self._paused_until = max(self._paused_until, decision.retry_at)
                self._ready.appendleft(batch)
            else:
                self._failing = self._failing and decision.reason == "retries_exhausted"
                self._settled.append(Settled(batch, decision.reason, outcome))
            self._cond.notify_all()
        if decision.action == "retry":
            self._log_retry(batch, outcome, decision.retry_at)
        else:
            self._wake()

    def _log_retry(self, batch: Batch, outcome: Outcome, retry_at: float) -> None:
        self._log.warning(
            "POST /%s failed (%s): retry %d of %d for %d events in %.1f s",
            batch.endpoint,
            outcome.summary,
            batch.attempts,
            self._policy.max_retries,
            len(batch),
            max(0.0, retry_at - self._clock()),
        )
