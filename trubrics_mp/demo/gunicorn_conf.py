"""gunicorn settings of ``trubrics-mp demo`` (``-c python:trubrics_mp.demo.gunicorn_conf``).

The setup ``docs/deployment/gunicorn.md`` recommends: ``preload_app`` (the
master loads the app, whose factory creates the client, so the master owns
the one flusher), plus the three hooks of :mod:`trubrics_mp.integrations.gunicorn`.
``worker_exit`` first writes the worker's ``track()`` timings for the summary.
Workers, bind address and the app come on the command line.
"""

from __future__ import annotations

import os
from typing import Any

from trubrics_mp.demo import app as demo_app
from trubrics_mp.integrations import gunicorn as trubrics_gunicorn

trubrics_gunicorn.configure(demo_app.current_client)

preload_app = True
worker_class = "sync"
graceful_timeout = 20
loglevel = "info"
# gunicorn 25+ opens a control socket in ~/.gunicorn, shared by every server of the
# user; the demo needs none (older gunicorns ignore this unknown name).
control_socket_disable = True

on_starting = trubrics_gunicorn.on_starting
on_exit = trubrics_gunicorn.on_exit


def worker_exit(server: Any, worker: Any) -> None:
    """Write this worker's timings, then hand its buffered events to the flusher."""
    if getattr(worker, "pid", None) == os.getpid():  # not in the master
        demo_app.write_report()
    trubrics_gunicorn.worker_exit(server, worker)
