"""The flusher's book of lost events: the one place they are counted and logged.

Every loss gets a reason in ``FlusherCounters.dropped``; every line about it
goes through a :class:`LogLimiter` (so a flood of failures cannot flood the
log), and every text that may carry what the API, a server or an exception
said is scrubbed of every API key the flusher was given.
"""

from __future__ import annotations

import logging

from ._ratelimit import LogLimiter
from ._redact import Secrets
from ._split import Loss
from ._stats import FlusherCounters


class LossBook:
    """Counts losses by reason and logs them, rate-limited and without API keys."""

    def __init__(self, counters: FlusherCounters, log: logging.Logger, secrets: Secrets) -> None:
        self.counters = counters
        self.log = log
        self.secrets = secrets
        self.limiter = LogLimiter()
        self._warned: set[str] = set()

    def record(self, reason: str, count: int) -> None:
        """The one place the flusher counts lost events."""
        self.counters.dropped[reason] += count

    def batch_loss(self, endpoint: str, loss: Loss) -> None:
        """Count and log the part of a batch the API or the retry policy cost."""
        self.counters.failed_batches += 1
        self.record(loss.reason, loss.events)
        last = loss.last
        if loss.reason == "unauthorized":
            self.warn_once(loss.reason, f"the API key was rejected ({self.scrub(last.summary)})")
        what = f"{last.summary}: {last.detail}" if last.status is not None else last.detail
        self.limited(
            f"loss:{loss.reason}",
            "dropped %d events for /%s (%s): %s",
            loss.events,
            endpoint,
            loss.reason,
            self.scrub(what),
        )

    def scrub(self, text: str) -> str:
        """Text from the API, a server or an exception, without any API key."""
        return self.secrets.redact(text)

    def limited(self, key: str, message: str, *args: object, level: int = logging.ERROR) -> None:
        """A line at most at the limiter's rate for ``key``."""
        self.limiter.log(self.log, level, key, message, *args)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log.error("%s", message)
