"""Gunicorn settings for the baselines (bench/run.py passes workers, threads and bind).

Without ``-c``, Gunicorn would read the service's ./gunicorn.conf.py and its hooks.
These are the service's transport settings, so that only the app differs.
"""

worker_class = "gthread"
preload_app = True
keepalive = 5
backlog = 2048
timeout = 30
graceful_timeout = 5
# Never recycle a worker mid-run: its CPU time would leave the measured process tree.
max_requests = 0
# The control socket is one path per user; the service disables it as well.
control_socket_disable = True
