"""Rate-limited log lines: a flood of one kind of loss costs a few lines, not one per event.

Each key (a drop reason, "retry"...) has a bucket of ``burst`` lines that
refills by one every ``interval_s``. A line that finds its bucket empty is not
written but counted, and the next line written for that key says how many
were left out, so the log never hides that more happened. ``allow`` is pure
(it takes ``now``); :meth:`LogLimiter.log` reads the clock.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

from ._logs import AnyLogger

BURST = 5
INTERVAL_S = 10.0


@dataclasses.dataclass
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was last brought up to date
    left_out: int = 0


class LogLimiter:
    """At most ``burst`` lines per key at once, then one per ``interval_s``.

    Invariant: a key's bucket holds between 0 and ``burst`` tokens; ``left_out``
    counts the lines refused since the last one allowed.
    """

    def __init__(
        self,
        burst: int = BURST,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._interval_s = interval_s
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str, now: float) -> Optional[int]:
        """None if a line for ``key`` must be left out; else how many were left out before it."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self._burst), now)
        refill = (now - bucket.at) / self._interval_s
        bucket.tokens, bucket.at = min(float(self._burst), bucket.tokens + refill), now
        if bucket.tokens < 1.0:
            bucket.left_out += 1
            return None
        bucket.tokens -= 1.0
        left_out, bucket.left_out = bucket.left_out, 0
        return left_out

    def log(self, logger: AnyLogger, level: int, key: str, message: str, *args: object) -> None:
        """``logger.log(level, message, *args)`` unless ``key`` is over its rate."""
        left_out = self.allow(key, self._clock())
        if left_out is None:
            return
        if left_out:
            message += " (and %d more like it, not logged)"
            args = (*args, left_out)
        logger.log(level, message, *args)
