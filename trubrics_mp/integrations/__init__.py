"""Hooks for the servers that fork: one module per host, each wired in one line.

- :mod:`trubrics_mp.integrations.gunicorn`: server hooks for ``gunicorn.conf.py``.
- :mod:`trubrics_mp.integrations.uwsgi`: postfork and atexit hooks, option checks.
- :mod:`trubrics_mp.integrations.celery`: signal handlers for prefork workers.

None of them imports its host at import time of :mod:`trubrics_mp`.
"""
