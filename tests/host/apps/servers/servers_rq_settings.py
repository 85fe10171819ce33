"""An RQ settings module (``rq worker -c servers_rq_settings``) that makes the client.

``rq worker`` imports its ``-c`` module in the worker's main process, before any
work horse is forked: importing the jobs' module here makes the client there, so
the main process owns the flusher, every horse inherits the client (and reaches
that flusher through a connection of its own), and the flusher is outside each
horse's process group. The main process leaves normally after a warm shutdown,
and its ``atexit`` handler delivers what the flusher holds.
"""

from __future__ import annotations

import servers_rq  # noqa: F401  (makes the client in the worker's main process)
