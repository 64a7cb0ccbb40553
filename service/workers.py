"""Gunicorn's threaded worker, with a thread pool that keeps the threads it uses warm.

A worker runs dozens of threads so that it can hold the requests waiting for a
gathered model call (see gunicorn.conf.py), but only a few run at once: as many
as there are requests in flight. ``concurrent.futures.ThreadPoolExecutor``
hands each job to whichever idle thread has waited longest, so a worker with 32
threads and 4 requests in flight cycles through all 32, and each request runs on
a thread whose stack and interpreter state have left the CPU's caches. Measured
on iris single rows at 8 connections, that cost about a tenth of the CPU time
per request against a pool of 4 threads.

``WarmThreadPool`` gives each job to the thread that became idle most recently
(idle threads form a stack), so a worker with few requests in flight keeps
using the same few threads, and the others wait, untouched, for a burst.
``ThreadWorker`` is Gunicorn's gthread worker with this pool, through the
method Gunicorn provides for it (``get_thread_pool``). It also keeps a keep-alive
client's thread for the client's next request, when that request comes within
``NEXT_REQUEST_WAIT_MS`` and no other connection waits for a thread: handing the
connection back to the worker's poller and on to a thread again costs, per
request, about a tenth of the worker's time on single rows. And it skips
Gunicorn's draining of a body the app has read whole (see ``_keepalive_after``):
under load, every system call that lets go of the GIL costs a hand-over to
another thread and back.
"""

from __future__ import annotations

import select
import socket
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from gunicorn.http.body import LengthReader
from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

# How long a thread that has answered on a keep-alive connection waits for the
# client's next request before it hands the connection back to the poller. A
# client that sends request after request replies within it; an idle one costs
# a thread this long, once.
NEXT_REQUEST_WAIT_MS = 2

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Idle:
    """An idle thread's place on the stack: its next job is put here, and it is woken."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # held until a job (or None: stop) is handed over
        self.job: _Job | None = None


class WarmThreadPool(Executor):
    """At most ``max_workers`` threads, started as jobs need them; each job goes to the most
    recently idle thread, or waits in order when every thread is busy."""

    def __init__(self, max_workers: int) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []  # a stack: the last to become idle is the first to work
        self._waiting: deque[_Job] = deque()  # jobs for when a thread is free
        self._threads: list[threading.Thread] = []
        self._shut_down = False

    @property
    def waiting(self) -> int:
        """Jobs waiting for a thread: every thread is busy."""
        return len(self._waiting)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        job: _Job = (future, fn, args, kwargs)
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new jobs after shutdown")
            if self._idle:
                idle = self._idle.pop()
                idle.job = job
                idle.wake.release()
            elif len(self._threads) < self.max_workers:
                # Daemonic, as the worker process decides itself how long it waits for
                # requests in flight (its graceful timeout) before it exits.
                thread = threading.Thread(target=self._work, args=(job,), daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._waiting.append(job)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the idle threads; busy ones stop after the jobs still waiting (unless cancelled)."""
        with self._lock:
            self._shut_down = True
            if cancel_futures:
                while self._waiting:
                    self._waiting.popleft()[0].cancel()
            for idle in self._idle:
                idle.job = None
                idle.wake.release()
            self._idle.clear()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _work(self, job: _Job | None) -> None:
        idle = _Idle()
        while job is not None:
            _run(job)
            job = None
            with self._lock:
                if self._waiting:
                    job = self._waiting.popleft()
                    continue
                if self._shut_down:
                    return
                self._idle.append(idle)
            idle.wake.acquire()
            job, idle.job = idle.job, None


def _run(job: _Job) -> None:
    future, fn, args, kwargs = job
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as error:  # handed to the future, as ThreadPoolExecutor does
        future.set_exception(error)
    else:
        future.set_result(result)


class ThreadWorker(GthreadWorker):
    """Gunicorn's gthread worker, its requests run by a ``WarmThreadPool``, each thread staying
    with a keep-alive client for as long as its requests follow one another closely."""

    def get_thread_pool(self) -> Executor:
        return WarmThreadPool(self.cfg.threads)

    def handle(self, conn: Any) -> Any:
        """Gunicorn's ``handle`` (one request), again for the client's next request while the
        connection is kept alive, the worker is not stopping, no other connection waits for a
        thread, and that request has come (or was read ahead) within ``NEXT_REQUEST_WAIT_MS``."""
        while True:
            kept = super().handle(conn)
            if kept is not True or not self.alive or self.tpool.waiting:
                return kept
            if not conn.parser.unreader.buf.getvalue() and not _readable(conn.sock, NEXT_REQUEST_WAIT_MS):
                return kept

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Gunicorn's check that a kept-alive connection holds no unread body, skipped when the
        app read the body to its end (as the service's routes do).

        Gunicorn drains what is left of a request's body twice, after the answer and
        again before it reads the next request, setting the socket's timeout for the
        first and resetting it after each: three system calls, each of which lets go of
        the GIL, which under load hands it to another thread and back, for a body that
        has nothing left. A request read whole is forgotten instead, so neither drain runs.
        """
        if keepalive and _read_to_end(conn.parser.mesg):
            conn.parser.mesg = None
            return True
        return bool(super()._keepalive_after(conn, keepalive))


def _read_to_end(request: Any) -> bool:
    """True when the body of Gunicorn's ``request`` (of a known length) has been read whole."""
    body = getattr(request, "body", None)
    reader = getattr(body, "reader", None)
    return isinstance(reader, LengthReader) and reader.length == 0 and not body.failed and not body.buf.tell()


def _readable(sock: socket.socket, milliseconds: int) -> bool:
    """True when ``sock`` has data (or its client has closed it) within ``milliseconds``."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(milliseconds))
