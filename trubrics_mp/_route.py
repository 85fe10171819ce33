"""Routes: where one client's events go and how they are batched (pure, no I/O).

One flusher serves every client of a pipeline whatever its API key, host or
batch settings: each connection tells its :class:`Route` first (a ``C``
message, see ``_protocol``), and events of different routes never share a
batch or a request. A connection that told none uses the flusher's own
settings (``None`` wherever a route is optional).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ._config import Config


@dataclasses.dataclass(frozen=True)
class Route:
    """The settings of a client that the flusher applies per batch.

    ``repr()`` never shows the API key.
    """

    host: str
    api_key: str = dataclasses.field(repr=False)
    flush_at: int
    flush_interval_s: float

    @classmethod
    def of(cls, config: Config) -> Route:
        return cls(config.host, config.api_key, config.flush_at, config.flush_interval_s)

    def url(self, endpoint: str) -> str:
        return f"{self.host.rstrip('/')}/{endpoint}"

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> Route:
        """The route a client sent; ``ValueError`` or ``TypeError`` if it is not one.

        The values are checked as the constructor checks them (through
        :class:`Config`), so a route cannot carry what a client could not.
        """
        data: Any = json.loads(payload)
        if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(
                "a route is a JSON object of host, api_key, flush_at, flush_interval_s"
            )
        return cls.of(Config(**data))
