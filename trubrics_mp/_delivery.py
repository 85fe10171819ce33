"""Delivery: sender threads that own every batch from hand-over until it is settled.

Threads exist only inside the flusher process. The main loop hands batches
over with :meth:`Delivery.put` and later collects final outcomes with
:meth:`Delivery.take_settled`: delivered, or dropped with a reason. Retries
never reach the main loop: the sender that gets a retryable failure puts the
batch back at the head of the line and sets the pause, both under the lock,
before any thread can take another batch. Nor do splits: a batch refused as
too large (413) is split in halves that go to the head of the line, with a
fresh retry budget and no pause; the batch handed over settles once all its
parts have (``_split``).

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
from ._split import Loss, Splits


@dataclasses.dataclass(frozen=True)
class Settled:
    """The final outcome of a batch handed over: ``losses`` is what was dropped.

    A batch that was never split has no loss (delivered) or one loss of all
    its events. A batch that was split has one loss per dropped part; its
    other events were delivered.
    """

    batch: Batch
    losses: tuple[Loss, ...] = ()

    @property
    def delivered(self) -> bool:
        """Every event of the batch was delivered."""
        return not self.losses

    @property
    def lost(self) -> int:
        return sum(loss.events for loss in self.losses)

    @property
    def reason(self) -> str:
        """The first loss's reason; empty when delivered."""
        return self.losses[0].reason if self.losses else ""

    @property
    def last(self) -> Outcome:
        """The answer that decided the first loss (a 200 when delivered)."""
        return self.losses[0].last if self.losses else Outcome(200)


class Delivery:
    """Ready batches, oldest first, behind a pause gate, posted by ``senders`` threads.

    Invariants (all under ``_cond``): a batch is in exactly one place, the
    ready line, a sender's hands, ``_settled``, or open in ``_splits`` (then
    each of its halves is in one of these places); no batch is taken while
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
        scrub: Callable[[str], str] = str,
    ) -> None:
        self._poster = poster
        self._scrub = scrub  # applied to what the API or an error said, before logging it
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
        self._splits = Splits()
        self.requests = 0
        self.retried_requests = 0
        self.split_batches = 0
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
                outcome, batch.attempts, self._clock(), time.time(), random.random(), len(batch)
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
        settled: Optional[Settled] = None
        with self._cond:
            self.requests += 1
            self._in_flight -= 1
            if decision.action == "retry":
                self.retried_requests += 1
                self._failing = True
                self._paused_until = max(self._paused_until, decision.retry_at)
                self._ready.appendleft(batch)
            elif decision.action == "split":
                self.split_batches += 1
                self._failing = False  # the API answered: no transient failure
                self._ready.extendleft(reversed(self._splits.split(batch)))
            else:
                self._failing = self._failing and decision.reason == "retries_exhausted"
                settled = self._settle(batch, outcome, decision)
            self._cond.notify_all()
        if decision.action == "retry":
            self._log_retry(batch, outcome, decision.retry_at)
        elif decision.action == "split":
            self._log.warning(
                "POST /%s refused %d events as too large (%s): sending them in two halves",
                batch.endpoint,
                len(batch),
                self._scrub(outcome.summary),
            )
        elif settled is not None:
            self._wake()

    def _settle(self, batch: Batch, outcome: Outcome, decision: Decision) -> Optional[Settled]:
        """Under the lock: settle ``batch``, or fold it into the batch it was split from."""
        losses = (
            () if decision.action == "delivered" else (Loss(len(batch), decision.reason, outcome),)
        )
        done = self._splits.settle(batch, losses)
        if done is None:
            return None
        settled = Settled(*done)
        self._settled.append(settled)
        return settled

    def _log_retry(self, batch: Batch, outcome: Outcome, retry_at: float) -> None:
        self._log.warning(
            "POST /%s failed (%s): retry %d of %d for %d events in %.1f s",
            batch.endpoint,
            self._scrub(outcome.summary),
            batch.attempts,
            self._policy.max_retries,
            len(batch),
            max(0.0, retry_at - self._clock()),
        )
