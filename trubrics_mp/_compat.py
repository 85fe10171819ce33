"""What makes ``Trubrics`` a drop-in for the official ``trubrics`` 1.8.5 client.

- :func:`clamp_like_official`: the constructor values 1.8.5 clamps with a
  warning (pure; the caller logs the warnings). Values it cannot use either
  are left alone for :class:`~trubrics_mp._config.Config` to refuse.
- :class:`OfficialAttributes`: the instance attributes 1.8.5 has, with the
  same meaning where they have one here (see the migration page).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, Optional

from ._config import Config

MIN_FLUSH_INTERVAL_S = 1.0  # trubrics 1.8.5 MIN_FLUSH_INTERVAL
MAX_FLUSH_BATCH_SIZE = 100  # trubrics 1.8.5 MAX_FLUSH_BATCH_SIZE
DEFAULT_FLUSH_PERIODIC_CHECK_S = 0.1  # trubrics 1.8.5 DEFAULT_FLUSH_PERIODIC_CHECK


@dataclasses.dataclass(frozen=True)
class Clamped:
    flush_interval: Any  # as given (any type) unless clamped: Config checks types
    flush_batch_size: Any
    flush_periodic_check: Any
    warnings: tuple[str, ...] = ()


def _number(value: object) -> Optional[float]:
    """``value`` as a float when it is an int or a float (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def clamp_like_official(
    flush_interval: object, flush_batch_size: object, flush_periodic_check: Optional[object]
) -> Clamped:
    """The values after 1.8.5's clamps, and the warnings it logs (its wording)."""
    warnings = []
    interval = _number(flush_interval)
    if interval is not None and 0 <= interval < MIN_FLUSH_INTERVAL_S:
        warnings.append(
            f"Flush interval {flush_interval} is too low. Setting it to minimum allowed"
            f" value of {MIN_FLUSH_INTERVAL_S:g}."
        )
        flush_interval = MIN_FLUSH_INTERVAL_S
    batch_size = _number(flush_batch_size)
    if batch_size is not None and batch_size > MAX_FLUSH_BATCH_SIZE:
        warnings.append(
            f"Flush batch size {flush_batch_size} is too high. Setting to maximum allowed"
            f" value of {MAX_FLUSH_BATCH_SIZE}."
        )
        flush_batch_size = MAX_FLUSH_BATCH_SIZE
    check = DEFAULT_FLUSH_PERIODIC_CHECK_S if flush_periodic_check is None else flush_periodic_check
    check_s, interval = _number(check), _number(flush_interval)
    if check_s is not None and interval is not None and check_s > interval:
        warnings.append(
            f"Periodic flush check interval {check} is higher than defined flush interval"
            f" period. Setting it to Flush interval period {flush_interval}."
        )
        check = flush_interval
    return Clamped(flush_interval, flush_batch_size, check, tuple(warnings))


class OfficialAttributes:
    """The instance attributes of trubrics 1.8.5 (``logger`` is set by ``Trubrics``).

    ``flush_periodic_check`` is kept as given (clamped as 1.8.5 does) but
    unused: the flusher process batches on its own clock. ``last_flush_time``
    is when this process's last ``flush()`` returned (at first: when the client
    was made); ``is_flushing`` is True while one runs in this process.
    """

    _config: Config
    flush_periodic_check: float
    last_flush_time: datetime.datetime
    is_flushing: bool

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def api_key(self) -> str:
        """The project API key (never shown by ``repr`` or in logs)."""
        return self._config.api_key

    @property
    def flush_interval(self) -> float:
        """Seconds a batch may wait to fill before it leaves."""
        return self._config.flush_interval_s

    @property
    def flush_batch_size(self) -> int:
        """Events per request (``flush_at``)."""
        return self._config.flush_at
