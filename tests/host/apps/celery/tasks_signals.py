"""Recipe 2: the documented signal-based setup (``trubrics_mp.integrations.celery``)."""

from __future__ import annotations

from common import make_app, make_client, register_tasks

from trubrics_mp.integrations.celery import setup

app = make_app("tasks_signals")
trubrics = setup(make_client)
register_tasks(app, lambda: trubrics.client)
