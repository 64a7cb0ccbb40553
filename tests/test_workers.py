"""The worker: its pool runs every job once, on the most recently idle thread; a thread stays with a
keep-alive client only while no other connection waits."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from http.client import HTTPConnection
from pathlib import Path

import pytest

from service.workers import WarmThreadPool
from tests.servers import JSON, REQUEST_TIMEOUT, http, running_server

TIMEOUT = 10


def test_jobs_give_their_results_and_exceptions_to_their_futures() -> None:
    pool = WarmThreadPool(2)
    done = pool.submit(lambda a, b=0: a + b, 2, b=3)
    failed = pool.submit(lambda: 1 / 0)
    assert done.result(TIMEOUT) == 5
    with pytest.raises(ZeroDivisionError):
        failed.result(TIMEOUT)
    pool.shutdown()


def test_a_job_after_another_runs_on_the_thread_that_became_idle_last() -> None:
    pool = WarmThreadPool(4)
    # Two jobs at once start two threads; the one released second becomes idle last.
    first_started, second_started = threading.Event(), threading.Event()
    release_first, release_second = threading.Event(), threading.Event()

    def hold(started: threading.Event, release: threading.Event) -> int:
        started.set()
        release.wait(TIMEOUT)
        return threading.get_ident()

    first = pool.submit(hold, first_started, release_first)
    second = pool.submit(hold, second_started, release_second)
    assert first_started.wait(TIMEOUT) and second_started.wait(TIMEOUT)
    release_first.set()
    first_thread = first.result(TIMEOUT)
    release_second.set()
    second_thread = second.result(TIMEOUT)
    assert first_thread != second_thread
    # Wait until the second thread is on the idle stack (it pushes itself after its job).
    for _ in range(1000):
        if len(pool._idle) == 2:
            break
        threading.Event().wait(0.01)
    later = [pool.submit(threading.get_ident).result(TIMEOUT) for _ in range(5)]
    assert later == [second_thread] * 5
    pool.shutdown()


def test_jobs_beyond_the_threads_wait_and_all_run() -> None:
    pool = WarmThreadPool(2)
    gate = threading.Event()
    running = []
    lock = threading.Lock()

    def job(index: int) -> int:
        with lock:
            running.append(index)
        gate.wait(TIMEOUT)
        return index

    futures = [pool.submit(job, index) for index in range(6)]
    assert len(pool._threads) == 2  # no more threads than allowed
    gate.set()
    assert [future.result(TIMEOUT) for future in futures] == list(range(6))
    assert sorted(running) == list(range(6))
    pool.shutdown()


def test_shutdown_finishes_the_waiting_jobs_then_refuses_new_ones() -> None:
    pool = WarmThreadPool(1)
    gate = threading.Event()
    busy = pool.submit(gate.wait, TIMEOUT)
    queued = pool.submit(lambda: "ran")
    threading.Timer(0.2, gate.set).start()
    pool.shutdown(wait=True)
    assert busy.done() and queued.result(0) == "ran"
    assert not any(thread.is_alive() for thread in pool._threads)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_shutdown_may_cancel_the_waiting_jobs() -> None:
    pool = WarmThreadPool(1)
    gate = threading.Event()
    busy = pool.submit(gate.wait, TIMEOUT)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    wait([busy], TIMEOUT)
    assert busy.result(0) is True
    assert queued.cancelled()


# --- In the real server ------------------------------------------------------------

IRIS_ROW = json.dumps({"features": [5.1, 3.5, 1.4, 0.2]})


@pytest.mark.integration
def test_a_client_that_keeps_sending_never_keeps_another_waiting(
    demo_store_path: Path, tmp_path: Path
) -> None:
    """One worker, one thread: a keep-alive client sending request after request is served on
    its thread, until another connection needs that thread; then both are served."""
    with running_server(demo_store_path, tmp_path, SERVICE_WORKERS="1", SERVICE_THREADS="1") as server:
        other_done = threading.Event()
        answered: list[int] = []

        def keep_sending() -> None:
            connection = HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
            deadline = time.monotonic() + 20
            try:
                while not other_done.is_set() and time.monotonic() < deadline:
                    connection.request("POST", "/v1/models/iris/predict", IRIS_ROW, {"Content-Type": JSON})
                    response = connection.getresponse()
                    body = json.loads(response.read())
                    assert response.status == 200 and body["prediction"] == "setosa", body
                    answered.append(response.status)
            finally:
                connection.close()

        with ThreadPoolExecutor(1) as pool:
            sender = pool.submit(keep_sending)
            for _ in range(500):
                if len(answered) >= 20 or sender.done():
                    break
                time.sleep(0.01)
            assert len(answered) >= 20, sender.result()
            started = time.monotonic()
            other = http("GET", server.url("/health"))
            waited = time.monotonic() - started
            before = len(answered)
            other_done.set()
            sender.result(timeout=REQUEST_TIMEOUT)
        assert other.status_code == 200
        assert waited < 5, f"the other connection waited {waited:.1f} s"
        assert before >= 20


@pytest.mark.integration
def test_a_kept_alive_connection_serves_the_next_request_whether_or_not_a_body_was_read(
    demo_store_path: Path, tmp_path: Path
) -> None:
    """Bodies the app reads whole (a prediction), leaves unread (an unknown route, a refused
    media type) or that arrive with the next request behind them: every answer on one keep-alive
    connection is the right one, and none is taken for the start of the next request."""
    with running_server(demo_store_path, tmp_path, SERVICE_WORKERS="1", SERVICE_THREADS="2") as server:
        connection = HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
        try:
            sent = [
                ("/v1/models/iris/predict", IRIS_ROW, JSON, 200),
                ("/v1/models/nowhere/predict/more", IRIS_ROW, JSON, 404),
                ("/v1/models/iris/predict", IRIS_ROW, "text/plain", 415),
                ("/v1/models/iris/predict", IRIS_ROW, JSON, 200),
                ("/health", "", JSON, 405),
                ("/v1/models/iris/predict", IRIS_ROW, JSON, 200),
            ]
            for path, body, media_type, status in sent * 3:
                connection.request("POST", path, body, {"Content-Type": media_type})
                response = connection.getresponse()
                answer = json.loads(response.read())
                assert response.status == status, (path, media_type, answer)
                if status == 200:
                    assert answer["prediction"] == "setosa", answer
            # Two requests in one write: the second waits in the server's buffer behind the first.
            one = (
                f"POST /v1/models/iris/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {JSON}\r\n"
                f"Content-Length: {len(IRIS_ROW)}\r\n\r\n{IRIS_ROW}"
            )
            assert connection.sock is not None
            connection.sock.sendall((one + one).encode())
            reader = connection.sock.makefile("rb")
            for _ in range(2):
                assert reader.readline().startswith(b"HTTP/1.1 200")
                length = 0
                while (line := reader.readline()) != b"\r\n":
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                assert json.loads(reader.read(length))["prediction"] == "setosa"
        finally:
            connection.close()
