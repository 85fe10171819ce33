"""Retry decisions for one HTTP attempt (pure: ``now`` and randomness are arguments).

- 2xx: delivered.
- No response (connection error, timeout), 408, 429 and 5xx: retried with
  exponential backoff and jitter, never sooner than ``Retry-After`` says,
  until ``retry_for_s`` seconds have passed since the batch's first attempt
  (a last attempt is made at that moment, unless ``Retry-After`` forbids
  it), or ``max_retries`` retries are spent when a count is set; then the
  batch is dropped (``retries_exhausted``).
- 413 (too large): a batch of several events is split in two (``split``),
  each half sent on its own (see ``_split``); one event alone is dropped as
  ``too_large``. A ``Retry-After`` on a 413 is ignored.
- 3xx: dropped at once (``redirect``): redirects are never followed, so the
  API key never leaves for another origin; the log names the ``Location``.
- Any other status: dropped at once (401 and 403 mean a bad API key).
"""

from __future__ import annotations

import dataclasses
import email.utils
from typing import Optional

RETRYABLE_STATUSES = frozenset({408, 429})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one POST came back with; ``status`` is None when no response came."""

    status: Optional[int]
    retry_after: Optional[str] = None
    detail: str = ""

    @property
    def summary(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else self.detail


@dataclasses.dataclass(frozen=True)
class Decision:
    action: str  # "delivered", "retry", "split" or "drop"
    retry_at: float = 0.0
    reason: str = ""


def is_retryable(status: Optional[int]) -> bool:
    return status is None or status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(value: Optional[str], now_epoch_s: float, cap_s: float) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap_s)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, when.timestamp() - now_epoch_s), cap_s)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a batch is retried (all times in seconds)."""

    max_retries: Optional[int] = None  # None: no count, only the time budget
    retry_for_s: float = 300.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    retry_after_cap_s: float = 300.0

    def backoff_s(self, retry_number: int, jitter: float) -> float:
        """Delay before retry ``retry_number`` (1-based); ``jitter`` in [0, 1)."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (retry_number - 1))
        return ceiling * (0.5 + jitter / 2)

    def decide(
        self,
        outcome: Outcome,
        attempts: int,
        now: float,
        now_epoch_s: float,
        jitter: float,
        events: int = 1,
        first_tried_at: Optional[float] = None,
    ) -> Decision:
        """What to do after attempt number ``attempts`` (1-based) of a batch of ``events``,
        first tried at ``first_tried_at`` (on the clock of ``now``; None: now), came back
        with ``outcome``."""
        status = outcome.status
        if status is not None and 200 <= status <= 299:
            return Decision("delivered")
        if status == 413:
            return Decision("split") if events > 1 else Decision("drop", reason="too_large")
        if not is_retryable(status):
            return Decision("drop", reason=_drop_reason(status))
        give_up_at = (now if first_tried_at is None else first_tried_at) + self.retry_for_s
        spent = self.max_retries is not None and attempts > self.max_retries
        if spent or now >= give_up_at:
            return Decision("drop", reason="retries_exhausted")
        retry_at = now + self.backoff_s(attempts, jitter)
        server_asks = parse_retry_after(outcome.retry_after, now_epoch_s, self.retry_after_cap_s)
        if server_asks is not None:
            if now + server_asks > give_up_at:
                return Decision("drop", reason="retries_exhausted")  # asked to wait too long
            retry_at = max(retry_at, now + server_asks)
        return Decision("retry", retry_at=min(retry_at, give_up_at))


def _drop_reason(status: Optional[int]) -> str:
    if status in (401, 403):
        return "unauthorized"
    if status is not None and 300 <= status <= 399:
        return "redirect"
    return f"http_{status}"
