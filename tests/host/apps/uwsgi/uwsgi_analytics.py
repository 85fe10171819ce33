"""The application's analytics module: creates the one Trubrics client, wires uWSGI.

Settings come from ``--env`` options of the uWSGI command line (see
``tests/host/test_host_uwsgi.py``). Imported by the master when the app is
preloaded (the default) or named with ``--shared-import``; with
``--lazy-apps`` and no ``--shared-import`` every worker imports it and so
owns a flusher of its own.
"""

from __future__ import annotations

import logging
import os
import sys

from trubrics_mp import Trubrics
from trubrics_mp.integrations import uwsgi as trubrics_uwsgi


def _logger() -> logging.Logger:
    logger = logging.getLogger("trubrics")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s [pid %(process)d] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    return logger


trubrics = Trubrics(
    os.environ["TRUBRICS_API_KEY"],
    os.environ["TRUBRICS_URL"],
    flush_interval=float(os.environ.get("TRUBRICS_FLUSH_INTERVAL", "60")),
    flush_at=int(os.environ.get("TRUBRICS_FLUSH_AT", "50")),
    logger=_logger(),
)
if os.environ.get("TRUBRICS_UWSGI_HOOKS", "1") == "1":
    trubrics_uwsgi.register(trubrics)
print(f"analytics: client created in pid {os.getpid()}", flush=True)
