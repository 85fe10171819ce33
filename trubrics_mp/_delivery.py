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
head of each request in flight when the failure began; batches that shared
that request go back in line untouched); after that only one batch is in
flight at a time (a probe) until an answer that is not a transient failure
comes back. Every other batch waits untouched. When batches wait in line
(the API is slower than events arrive), several of one destination (endpoint
and route: host, key) share a request, up to 100 events. The pause after a
failure holds every route's batches: one failing host slows the others.
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
from ._config import MAX_FLUSH_AT
from ._http import Poster
from ._ratelimit import LogLimiter
from ._retry import Decision, Outcome, RetryPolicy
from ._split import Loss, Splits

MAX_REQUEST_EVENTS = MAX_FLUSH_AT  # the API's (and the official SDK's) limit per request
MAX_REQUEST_BYTES = 1024 * 1024  # batches join a request while its body stays under this
BUNDLE_AFTER_S = 1.0  # batches share a request once the head has waited this long in line
_SHARED_FATE = frozenset({"retries_exhausted", "unauthorized"})  # true of every batch
_MALFORMED = frozenset({"http_400", "http_422"})  # refusals a bad event explains: sifted


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


def scaled(clock: Callable[[], float], scale: float) -> Callable[[], float]:
    """``clock`` running ``scale`` times faster from now (``TRUBRICS_MP_TIME_SCALE``:
    tests make retry waits and budgets of hours pass in minutes)."""
    if scale == 1.0:
        return clock
    start = clock()
    return lambda: start + (clock() - start) * scale


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
        bundle_after_s: float = BUNDLE_AFTER_S,
        scrub: Callable[[str], str] = str,
        wait_scale: float = 1.0,
    ) -> None:
        self._bundle_after_s = bundle_after_s
        self._poster = poster
        self._scrub = scrub  # applied to what the API or an error said, before logging it
        self._policy = policy
        self._wake = wake
        self._log = logger
        self._clock = clock
        self._wait_scale = wait_scale  # seconds of ``clock`` per real second (see scaled)
        self._cond = threading.Condition()
        self._ready: collections.deque[Batch] = collections.deque()
        self._settled: list[Settled] = []
        self._paused_until = 0.0
        self._failing = False
        self._in_flight = 0
        self._closed = False
        self._splits = Splits()
        self._limiter = LogLimiter()
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
        batch.ready_at = self._clock()
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
            bundle = self._take()
            if not bundle:
                return
            outcome = self._post(bundle)
            decision = self._policy.decide(
                outcome,
                bundle[0].attempts,
                self._clock(),
                time.time(),
                random.random(),
                sum(map(len, bundle)),
                bundle[0].first_tried_at,
            )
            self._record(bundle, outcome, decision)

    def _take(self) -> list[Batch]:
        """The next batches to post in one request (none once closed)."""
        with self._cond:
            while not self._closed:
                wait_s = self._paused_until - self._clock()
                probing = self._failing and self._in_flight > 0
                if self._ready and wait_s <= 0 and not probing:
                    self._in_flight += 1
                    return self._bundle()
                timed = wait_s > 0 and not probing
                self._cond.wait(timeout=wait_s / self._wait_scale if timed else None)
            return []

    def _bundle(self) -> list[Batch]:
        """The head batch, and the batches behind it for the same destination that fit.

        Batches wait in line only when the API is slower than events arrive;
        once the head has waited ``bundle_after_s``, up to
        ``MAX_REQUEST_EVENTS`` of them travel in one request (the API's limit),
        which the API handles far better than many small ones. Otherwise, and
        while the API fails, the head batch goes alone (one request per
        ``flush_at`` events, as with the official SDK).
        """
        bundle = [self._ready.popleft()]
        waited_s = self._clock() - bundle[0].ready_at
        if self._failing or bundle[0].alone or waited_s < self._bundle_after_s:
            return bundle
        events, nbytes = len(bundle[0]), bundle[0].nbytes
        while self._ready and self._ready[0].destination == bundle[0].destination:
            after = self._ready[0]
            too_many = events + len(after) > MAX_REQUEST_EVENTS
            if after.alone or too_many or nbytes + after.nbytes > MAX_REQUEST_BYTES:
                break
            bundle.append(self._ready.popleft())
            events, nbytes = events + len(after), nbytes + after.nbytes
        return bundle

    def _post(self, bundle: list[Batch]) -> Outcome:
        """POST every event of ``bundle``; only the head batch counts the attempt."""
        head = bundle[0]
        if not head.attempts:
            head.first_tried_at = self._clock()
        head.attempts += 1
        body = head.body() if len(bundle) == 1 else Batch.join_bodies(bundle)
        try:
            return self._poster.post(head.endpoint, body, head.route)
        except Exception as exc:  # a poster must not raise; a sender must not die
            self._log.exception("unexpected error posting to /%s", head.endpoint)
            return Outcome(None, detail=repr(exc))

    def _record(self, bundle: list[Batch], outcome: Outcome, decision: Decision) -> None:
        settled_any, part = False, None
        with self._cond:
            told = bool(self._settled)  # the main loop was woken and has not taken them yet
            self.requests += 1
            self._in_flight -= 1
            if decision.action == "retry":
                self.retried_requests += 1
                self._failing = True
                self._paused_until = max(self._paused_until, decision.retry_at)
                self._ready.extendleft(reversed(bundle))  # back in line, in order
            elif (
                len(bundle) > 1
                and decision.action in ("drop", "split")
                and (decision.reason not in _SHARED_FATE)
            ):
                for batch in bundle:  # refused: find out which batch it was, one by one
                    batch.alone = True
                self._ready.extendleft(reversed(bundle))
            elif decision.action == "split":
                self.split_batches += 1
                self._failing = False  # the API answered: no transient failure
                halves = self._splits.split(bundle[0])
                for half in halves:
                    half.alone = True  # too large already: it travels on its own
                self._ready.extendleft(reversed(halves))
            elif decision.reason in _MALFORMED and len(bundle) == 1:
                self._failing = False  # the API answered: no transient failure
                part = self._splits.sift(bundle[0], outcome)  # None: the refusal stands
                if part is not None:
                    part.alone = True
                    self._ready.appendleft(part)
                else:
                    settled_any = self._settle(bundle[0], outcome, decision) is not None
            else:
                self._failing = self._failing and decision.reason == "retries_exhausted"
                for batch in bundle:
                    settled_any = self._settle(batch, outcome, decision) is not None or settled_any
            if self._ready:  # only then may another sender go on (else put() wakes one)
                self._cond.notify_all()
        self._tell(bundle, outcome, decision, part)
        if settled_any and not told:  # one wake-up per group the main loop takes
            self._wake()

    def _tell(
        self, bundle: list[Batch], outcome: Outcome, decision: Decision, part: Optional[Batch]
    ) -> None:
        """Log (rate-limited) a retry, a split or a sift; a drop is the main loop's to log."""
        if decision.action not in ("retry", "split") and part is None:
            return  # delivered or dropped: nothing to say here (most outcomes)
        head, summary = bundle[0], self._scrub(outcome.summary)
        if decision.action == "retry":
            self._limiter.log(
                self._log,
                logging.WARNING,
                "retry",
                "POST /%s failed (%s): retry %d for %d events in %.1f s (given up %.0f s "
                "after the first attempt)",
                head.endpoint,
                summary,
                head.attempts,
                sum(map(len, bundle)),
                max(0.0, decision.retry_at - self._clock()),
                self._policy.retry_for_s,
            )
        elif decision.action == "split" and len(bundle) == 1:
            self._limiter.log(
                self._log,
                logging.WARNING,
                "split",
                "POST /%s refused %d events as too large (%s): sending them in two halves",
                head.endpoint,
                len(head),
                summary,
            )
        elif part is not None:
            self._limiter.log(
                self._log,
                logging.ERROR,
                "sift",
                "POST /%s refused %d events (%s): %d are no JSON object, dropped as "
                "bad_message; sending the other %d again",
                head.endpoint,
                len(head),
                summary,
                len(head) - len(part),
                len(part),
            )

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
