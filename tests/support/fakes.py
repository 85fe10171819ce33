"""In-process stand-ins for the flusher's unit tests: a scripted HTTP poster.

The fake poster is the ``Poster`` protocol of ``trubrics_mp._http`` with a
script deciding each answer, and a record of every call, so that tests of
the delivery and flusher roles run in milliseconds without HTTP.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Optional

from trubrics_mp._delivery import Delivery, Settled
from trubrics_mp._retry import Outcome, RetryPolicy
from trubrics_mp._route import Route

Script = Callable[[int, str, list[dict[str, Any]]], Outcome]  # (call number, endpoint, events)


@dataclasses.dataclass(frozen=True)
class Call:
    number: int
    endpoint: str
    events: list[dict[str, Any]]
    at: float  # time.monotonic() when the post began
    route: Optional[Route] = None  # the client's host and key (None: the flusher's own)


def always(status: int, retry_after: str = "") -> Script:
    return lambda number, endpoint, events: Outcome(status, retry_after=retry_after or None)


ANSWER_200 = always(200)


class FakePoster:
    """Answers each post as ``script`` says and records it; thread-safe."""

    def __init__(self, script: Script = ANSWER_200) -> None:
        self.script = script
        self.calls: list[Call] = []
        self.closed = False
        self._lock = threading.Lock()

    def post(self, endpoint: str, body: bytes, route: Optional[Route] = None) -> Outcome:
        """As the script says; a body that is not JSON gets a 422, as from the API."""
        try:
            events = json.loads(body)
        except ValueError:
            events = None
        with self._lock:
            number = len(self.calls) + 1
            self.calls.append(Call(number, endpoint, events or [], time.monotonic(), route))
            script = self.script
        if events is None:
            return Outcome(422, detail="the body is not JSON")
        return script(number, endpoint, events)

    def close(self) -> None:
        self.closed = True

    def delivered(self) -> list[dict[str, Any]]:
        """Events of every call that the script answered with a 2xx (re-asked per call)."""
        with self._lock:
            calls = list(self.calls)
        return [event for call in calls for event in call.events]

    def count(self) -> int:
        with self._lock:
            return len(self.calls)


_LOG = logging.getLogger("trubrics_mp.tests")


class RunningDelivery:
    """A started Delivery whose settled outcomes are collected on each wake."""

    def __init__(
        self,
        poster: FakePoster,
        policy: RetryPolicy,
        senders: int = 4,
        bundle_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settled: list[Settled] = []
        self._lock = threading.Lock()
        self.delivery = Delivery(
            poster, policy, senders, self._wake, _LOG, clock=clock, bundle_after_s=bundle_after_s
        )
        self.delivery.start()

    def _wake(self) -> None:
        with self._lock:
            self.settled.extend(self.delivery.take_settled())

    def outcomes(self) -> list[Settled]:
        with self._lock:
            return list(self.settled)

    def stop(self) -> None:
        self.delivery.stop(timeout_s=5.0)


_socket_numbers = itertools.count(1)


def private_socket_path() -> str:
    """A fresh socket path in the test's private runtime directory (tests/conftest.py)."""
    directory = os.environ["TRUBRICS_MP_RUNTIME_DIR"]
    return os.path.join(directory, f"unit-{os.getpid()}-{next(_socket_numbers)}.sock")
