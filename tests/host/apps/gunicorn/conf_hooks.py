# gunicorn.conf.py with the optional hooks, as docs/deployment/gunicorn.md shows them
# (on_exit is not needed: the master's atexit handler closes its client).
# Per-test settings (workers, worker class, preload...) come on the command line.
from trubrics_mp.integrations import gunicorn as trubrics_gunicorn

trubrics_gunicorn.configure("analytics:client")
on_starting = trubrics_gunicorn.on_starting
worker_exit = trubrics_gunicorn.worker_exit

graceful_timeout = 20
