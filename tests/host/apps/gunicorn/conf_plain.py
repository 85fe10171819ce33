# gunicorn.conf.py without the trubrics_mp hooks.
graceful_timeout = 20
