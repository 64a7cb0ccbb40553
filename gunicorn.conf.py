"""Gunicorn settings for the model service: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value comes from ``service.config.Settings`` (environment variables with
the ``SERVICE_`` prefix, plus ``HOST``/``PORT``), so the service and its server
are configured in one place.
"""

import json

from gunicorn import util
from threadpoolctl import threadpool_limits

from service import unservable_reason
from service.config import Settings

settings = Settings.from_env()

# --- Server socket -----------------------------------------------------------
# Loopback by default: exposing the service is a deliberate act (HOST=0.0.0.0).
bind = [settings.bind]
backlog = 2048

# --- Worker processes ----------------------------------------------------------
# Prediction is CPU-bound and holds the GIL for much of its time, so processes,
# not threads, give parallelism: one worker per core by default. A few threads
# per worker keep slow clients and keep-alive connections from idling a core.
workers = settings.workers
worker_class = "gthread"
threads = settings.threads
keepalive = 5

# Load the app (and every model) once in the master, then fork: workers start
# ready and share the model's memory pages copy-on-write.
preload_app = True

# A request that takes longer than this is a stuck worker; it is killed and replaced.
timeout = settings.timeout
# On SIGTERM/SIGHUP, workers get this long to finish the requests they hold.
graceful_timeout = settings.graceful_timeout
# Recycle workers now and then, so a slow leak in any library cannot grow
# forever; the jitter keeps them from all restarting at the same moment.
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests_jitter

# The control socket lives at one path per user: two services (or test runs)
# on one machine would fight over it, and nothing here uses it.
control_socket_disable = True

# --- Logging -------------------------------------------------------------------
accesslog = "-"  # stdout
errorlog = "-"  # stderr
loglevel = settings.log_level.lower()
# %(p)s is the worker's pid: which worker served which request.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms worker=%(p)s'
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"},
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "stdout": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "root": {"level": settings.log_level, "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": settings.log_level, "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
    },
}


def write_problem(sock, status_int, reason, mesg):
    """Gunicorn's own answers (request line too long, malformed HTTP) as problem details.

    Gunicorn writes these before the app sees the request, as HTML by default;
    this service answers JSON on every path, so the writer is replaced.
    """
    body = json.dumps(
        {
            "type": "/problems/bad-http-request",
            "title": reason,
            "status": status_int,
            "detail": mesg or reason,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = write_problem


# --- Server hooks --------------------------------------------------------------
def on_starting(server):
    """Refuse to start, saying why, when not a single model could be loaded."""
    reason = unservable_reason(server.app.wsgi())
    if reason:
        server.log.error("refusing to start: %s", reason)
        server.halt(reason=reason, exit_status=4)


def post_fork(server, worker):
    # The master loaded the models with native thread pools held at one thread
    # (see service.models.registry). Each worker may now use its share of the
    # cores; workers x model threads should not exceed the core count.
    threadpool_limits(limits=settings.model_threads)
