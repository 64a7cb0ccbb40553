"""Gunicorn settings for the model service: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value comes from ``service.config.process_settings()`` (environment
variables with the ``SERVICE_`` prefix, plus ``HOST``/``PORT``): the same
``Settings`` object that ``wsgi.py`` builds the app from, so the service and its
server are configured in one place, parsed once.
"""

import gc
import json
import logging
import signal
import time

from service.config import first_config_reading, process_settings, share_metrics_dir

# Gunicorn reads this file again, in the same master process, on SIGHUP. Work
# that must happen once per server (cleaning the metrics directory, turning
# the collector off while the app loads) is done on the first reading only.
_FIRST_READING = first_config_reading()

# Parsed once per process and shared with the app that wsgi.py builds.
settings = process_settings()

# --- Metrics directory ---------------------------------------------------------
# Workers are separate processes; prometheus_client sums their samples from files
# in one directory. It picks that storage when it is first imported (through
# the service below), so the directory is set first: the operator's own
# PROMETHEUS_MULTIPROC_DIR, cleaned of a previous run's files, or a fresh one
# that is removed when the master exits, however it exits. A reload (SIGHUP)
# keeps the directory and its files: counters go on from where they were.
if _FIRST_READING:
    share_metrics_dir(settings)

from gunicorn import util
from prometheus_client import multiprocess
from threadpoolctl import threadpool_limits

from service.app import start_worker, stop_worker, unservable_reason
from service.logs import logging_config
from service.models.onnx_runtime import hold_sessions_until_fork
from service.state import EXTENSION_KEY

# --- Compiled models -------------------------------------------------------------
# Importing onnxruntime starts a native thread, and the master must fork with
# none but its own. The master loads (and warms up) every model on scikit-learn;
# each worker starts its own onnxruntime sessions after the fork (post_fork).
if _FIRST_READING:
    hold_sessions_until_fork()

# --- Shared memory ---------------------------------------------------------------
# The master loads the app and every model, then forks: the workers share those
# pages until something writes to them. A garbage collection writes to the header
# of every object it visits, so a worker's first collection would copy most of the
# shared heap. The collector stays off while the master loads the app (freed
# objects would leave holes that later allocations fill, dirtying shared pages);
# everything loaded is frozen out of its reach before each fork, and each worker
# collects only what it allocates itself.
if _FIRST_READING:
    gc.disable()

# --- Server socket -----------------------------------------------------------
# Loopback by default: exposing the service is a deliberate act (HOST=0.0.0.0).
bind = [settings.bind]
backlog = 2048

# --- Request limits ------------------------------------------------------------
# What Gunicorn refuses before the app sees it (answered as problem details, see
# write_problem below): a request line (method, path and query) over 4 KiB is a
# 414; more than 50 header fields, or one over 8 KiB, a 431. The service's own
# routes need a fraction of that; the body's limits are the app's
# (SERVICE_MAX_BODY_BYTES, SERVICE_MAX_UPLOAD_BYTES).
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# --- Worker processes ----------------------------------------------------------
# Prediction is CPU-bound and holds the GIL for much of its time, so processes,
# not threads, give parallelism: one worker per core by default. Threads do
# not add CPU; they hold requests. Concurrent small requests to one model are
# gathered into one model call (SERVICE_BATCHING, service/models/batching.py),
# and a request waiting for its call holds a thread: 32 threads per worker (the
# default) let a worker gather dozens of them, where 2 could never gather more
# than 2. A waiting thread costs next to nothing (blocked, outside the GIL; its
# stack is reserved address space, of which it touches a few pages), and the
# threads also keep slow clients and keep-alive connections from idling a core.
# The worker is Gunicorn's gthread worker with a pool that hands each request to
# the thread that became idle last (service/workers.py): with few requests in
# flight, the same few threads stay warm in the CPU's caches. A thread also
# stays with a keep-alive client whose next request follows within 2 ms, while
# no other connection waits for a thread.
workers = settings.workers
worker_class = "service.workers.ThreadWorker"
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
# One JSON object per line on stdout (python-json-logger, configured in
# service/logs.py). The access log is the app's (service/access_log.py): it
# writes each record in one call, where Gunicorn's would first gather every
# header and variable of the request.
accesslog = None
logger_class = "service.logs.ServerLogger"
errorlog = "-"
loglevel = settings.log_level.lower()
logconfig_dict = logging_config(settings.log_level)
# Python warnings (a library's UserWarning, say) become log records too, so they
# reach stdout as JSON like everything else rather than stderr as bare text.
logging.captureWarnings(True)


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
def when_ready(server):
    # The app is loaded and no worker exists yet; the master collects again, but
    # never visits what the workers will share.
    gc.freeze()
    gc.enable()


def pre_fork(server, worker):
    gc.freeze()  # what the master allocated since, before a worker is (re)started


def on_starting(server):
    """Refuse to start, saying why, when not a single model could be loaded."""
    reason = unservable_reason(server.app.wsgi())
    if reason:
        server.log.error("refusing to start: %s", reason)
        server.halt(reason=reason, exit_status=4)


def child_exit(server, worker):
    # A dead worker's gauges (requests in flight) must no longer count.
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # The master kills a worker graceful_timeout after it asked it to stop
    # (SIGTERM, also sent on SIGHUP). Note when that is, so that worker_exit
    # knows how long the audit log's writer may take.
    begin_graceful_stop = worker.handle_exit

    def stop(signum, frame):
        if getattr(worker, "killed_at", None) is None:
            worker.killed_at = time.monotonic() + settings.graceful_timeout
        begin_graceful_stop(signum, frame)

    signal.signal(signal.SIGTERM, stop)


def worker_exit(server, worker):
    # A gracefully stopped worker finishes its gRPC calls, then writes out its
    # queued audit lines, finishing a moment before the master would kill it.
    app = server.app.wsgi()
    killed_at = getattr(worker, "killed_at", None) or time.monotonic() + settings.graceful_timeout
    stop_worker(app, grace=max(0.0, killed_at - time.monotonic() - 2.0))
    audit = app.extensions[EXTENSION_KEY].audit
    if audit is not None:
        audit.close(deadline=killed_at - 1.0)


def post_fork(server, worker):
    gc.enable()
    # The master loaded the models with native thread pools held at one thread
    # (see service.models.registry). Each worker may now use its share of the
    # cores; workers x model threads should not exceed the core count.
    threadpool_limits(limits=settings.model_threads)
    # Now, not on the first request: compiled models start their sessions here,
    # and the worker's gRPC server (SERVICE_GRPC_PORT) its threads.
    start_worker(server.app.wsgi())
