"""``rq worker -c benchmarks.rq_settings``: the client made in the worker's main process.

``rq worker`` imports its settings module before it forks any work horse, so a
client made here is inherited by every horse (``benchmarks/rq_jobs.py``, mode
``in-worker``). No RQ setting is defined: the worker gets ``--url``.
"""

from __future__ import annotations

from . import rq_jobs

rq_jobs.client()
