"""Server subprocesses of the demo: the collector and gunicorn.

Each runs in a session (so process group) of its own, so a Ctrl-C in the
terminal reaches only the demo, which then stops them in order: gunicorn
first (its master delivers every event and stops the flusher), the collector
last. Their output goes to a log file in the demo's temporary directory.
The process handling itself is ``trubrics_mp._servers.ServerProcess``, the one
the test suite runs its servers with.

Caveat: if the demo itself is SIGKILLed, nothing stops them; the flusher
still exits on its own once the gunicorn master is gone.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path
from typing import Any, Optional, Sequence

from .._servers import POLL_S, STOP_DEADLINE_S, ServerProcess

__all__ = ["POLL_S", "DemoError", "Service", "get_json"]

HTTP_TIMEOUT_S = 30.0


class DemoError(RuntimeError):
    """Something the demo needs did not happen; the message says what."""


class Service(ServerProcess):
    """A server subprocess in its own process group, its output also in ``log_path``."""

    failure = DemoError

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        super().__init__(argv, name=name, env=env, log_path=log_path)

    def stop(
        self, deadline_s: float = STOP_DEADLINE_S, *, sig: Optional[int] = signal.SIGTERM
    ) -> Optional[int]:
        """Stop it, then wait for (or kill) the rest of its group; idempotent.

        A second Ctrl-C while waiting kills the group at once (and is re-raised).
        Returns the exit status (None if never started).
        """
        status = super().stop(deadline_s, sig=sig)
        if self.proc is not None:
            self.reap_group(deadline_s)
        return status


def get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON answer (DemoError on any failure)."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise DemoError(f"GET {url} failed: {exc}") from exc
