"""HTTP side of the flusher: sender threads posting batches with one keep-alive session.

Threads exist only inside the flusher process. The main loop hands batches
to a :class:`Dispatcher`; ``senders`` threads take them, POST them, and put
``(batch, outcome)`` on a results queue, waking the main loop through a
callback. A retryable failure pauses *all* sending until its retry time, so
while the API is down only the batch at the head spends its retry budget.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Callable, Optional

import requests

from ._batching import Batch
from ._config import Config
from ._retry import Outcome

Result = tuple[Batch, Outcome]


class Dispatcher:
    """Ready batches, oldest first, behind a pause gate shared by every sender."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: collections.deque[Batch] = collections.deque()
        self._paused_until = 0.0
        self._closed = False

    def put(self, batch: Batch) -> None:
        with self._cond:
            self._ready.append(batch)
            self._cond.notify()

    def put_retry(self, batch: Batch, retry_at: float) -> None:
        """Put ``batch`` first in line and hold every send until ``retry_at``."""
        with self._cond:
            self._ready.appendleft(batch)
            self._paused_until = max(self._paused_until, retry_at)
            self._cond.notify_all()

    def take(self) -> Optional[Batch]:
        """The next batch to post; None once closed."""
        with self._cond:
            while not self._closed:
                wait_s = self._paused_until - self._clock()
                if self._ready and wait_s <= 0:
                    return self._ready.popleft()
                self._cond.wait(timeout=wait_s if wait_s > 0 else None)
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Sender:
    """``config.senders`` threads that POST batches and report each outcome."""

    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher,
        results: queue.SimpleQueue[Result],
        wake: Callable[[], None],
        logger: logging.Logger,
    ) -> None:
        self._config = config
        self._dispatcher = dispatcher
        self._results = results
        self._wake = wake
        self._logger = logger
        self._session = _make_session(config)
        self._threads = [
            threading.Thread(target=self._run, name=f"trubrics-mp-sender-{i}", daemon=True)
            for i in range(config.senders)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float) -> None:
        self._dispatcher.close()
        for thread in self._threads:
            thread.join(timeout_s)
        self._session.close()

    def _run(self) -> None:
        while True:
            batch = self._dispatcher.take()
            if batch is None:
                return
            self._results.put((batch, self.post(batch)))
            self._wake()

    def post(self, batch: Batch) -> Outcome:
        url = self._config.endpoint_url(batch.endpoint)
        try:
            response = self._session.post(
                url, data=batch.body(), timeout=self._config.request_timeout_s
            )
        except requests.RequestException as exc:
            return Outcome(None, detail=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # never let a sender thread die
            self._logger.exception("unexpected error posting to %s", url)
            return Outcome(None, detail=repr(exc))
        return Outcome(
            response.status_code,
            retry_after=response.headers.get("Retry-After"),
            detail="" if response.ok else _error_detail(response),
        )


def _make_session(config: Config) -> requests.Session:
    """One keep-alive session for every sender thread.

    Proxy settings (``HTTPS_PROXY``, ``NO_PROXY``...) are read once, here,
    instead of on every request (``trust_env``, which also looks for a
    ``.netrc`` file each time): that per-request work was a large part of the
    flusher's CPU. A change to those variables needs a new flusher.
    """
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(config.host))
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=config.senders)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Content-Type": "application/json", "x-api-key": config.api_key})
    return session


def _error_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]
