"""Recipe 1: the client is made at import time of the tasks module.

``celery -A tasks_import worker`` imports this module in the main worker
process, before the pool starts: the main process owns the flusher and every
prefork child inherits the client. Nothing else is wired: the client's own
``atexit`` handler closes it when the main process exits.
"""

from __future__ import annotations

from common import make_app, make_client, register_tasks

app = make_app("tasks_import")
trubrics = make_client()
register_tasks(app, lambda: trubrics)
