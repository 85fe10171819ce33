"""Recipe 3: no hook, and no client in the main worker process.

Each pool process makes its own client the first time one of its tasks needs
it (a recycled child's replacement makes a new one): every one of them joins
the machine's one flusher. The main process never makes a client, so it is
connected to nothing, and billiard ends its children with ``os._exit``: no
``close()`` runs anywhere.
"""

from __future__ import annotations

import functools

from common import make_app, make_client, register_tasks

from trubrics_mp import Trubrics

app = make_app("tasks_children")


@functools.cache
def client() -> Trubrics:
    """This process's client, made at its first call (never in the main process)."""
    return make_client()


register_tasks(app, client)
