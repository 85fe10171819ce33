# gunicorn.conf.py as docs/deployment/gunicorn.md tells users to write it.
# Per-test settings (workers, worker class, preload...) come on the command line.
from trubrics_mp.integrations import gunicorn as trubrics_gunicorn

trubrics_gunicorn.configure("analytics:client")
on_starting = trubrics_gunicorn.on_starting
worker_exit = trubrics_gunicorn.worker_exit
on_exit = trubrics_gunicorn.on_exit

graceful_timeout = 20
