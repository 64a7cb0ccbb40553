"""What a hostile client or a careless operator can do to the real server, bounded in time and bytes.

Broken request bodies, an audit log fed by a large upload, a CSV header tens of
thousands of columns wide, a body of 300,000 unknown keys, a reload (SIGHUP)
and failed starts. Memory is read from /proc for a server of one worker with
one thread, so every request runs on the same thread of the same process.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local_gunicorn import DuplexUpload, peak_rss, rss
from tests.observed import Metrics
from tests.servers import (
    PROBLEM,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    Server,
    launch,
    local_session,
    running_server,
    wait_for_exit,
    wait_until_answering,
    worker_pid,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
IRIS_HEADER = b"sepal_length,sepal_width,petal_length,petal_width"
IRIS_ROWS = b"5.1,3.5,1.4,0.2\n6.9,3.1,5.4,2.1\n5.9,3.0,4.2,1.5\n"  # setosa, virginica, versicolor


def scrape(server: Server) -> Metrics:
    with local_session() as session:
        response = session.get(server.url("/metrics"), timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200
    return Metrics(response.text)


def iris_csv(size: int) -> Iterator[bytes]:
    """A CSV file of about ``size`` bytes in pieces of 216 KiB, made as it is sent (chunked)."""
    yield IRIS_HEADER + b"\n"
    piece = IRIS_ROWS * 3000
    for _ in range(max(1, size // len(piece))):
        yield piece


def iris_csv_rows(size: int) -> int:
    return max(1, size // (len(IRIS_ROWS) * 3000)) * 9000


@dataclass(frozen=True)
class Answer:
    status_code: int
    content_type: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def post_csv(server: Server, body: Iterator[bytes] | bytes) -> Answer:
    """The file sent chunked, its answer read while it is sent (the answer streams back)."""
    pieces = iter([body]) if isinstance(body, bytes) else body
    with DuplexUpload(server.port, "/v1/models/iris/predict/csv", pieces, timeout=300) as upload:
        content = upload.response.read()
        return Answer(upload.response.status, upload.response.getheader("Content-Type", ""), content)


# --- 1. A body the server cannot read is the client's fault -------------------------------

CHUNKED = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
BROKEN_BODIES = {
    "bad-chunk-size": (CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n", False),
    "missing-chunk-terminator": (CHUNKED + b"3\r\nabcXY5\r\nhello\r\n0\r\n\r\n", False),
    "chunked-client-closes-early": (CHUNKED + b"40\r\n[5.1, 3.5", True),
    "shorter-than-content-length": (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: 100\r\n\r\n"
        + b'{"features": [5.1, 3.5, 1.4, 0.2]}',
        True,
    ),
}


def exchange(server: Server, request: bytes, *, close_early: bool) -> tuple[int, str, bytes]:
    """Send raw bytes (then stop sending, if ``close_early``); the status, content type and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT) as conn:
        conn.sendall(request)
        if close_early:
            conn.shutdown(socket.SHUT_WR)
        received = b""
        while b"\r\n\r\n" not in received and (piece := conn.recv(65536)):
            received += piece
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            key.strip().lower(): value.strip() for key, value in (line.split(":", 1) for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(body) < length and (piece := conn.recv(65536)):
            body += piece
    return int(lines[0].split()[1]), headers.get("content-type", ""), body


@pytest.fixture(scope="module")
def one_worker(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        demo_store_path, tmp_path_factory.mktemp("one_worker"), SERVICE_WORKERS="1", SERVICE_THREADS="1"
    ) as server:
        yield server


@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris/predict/csv"])
@pytest.mark.parametrize("fault", sorted(BROKEN_BODIES))
def test_a_body_that_cannot_be_read_is_a_400_never_a_500(one_worker: Server, path: str, fault: str) -> None:
    template, close_early = BROKEN_BODIES[fault]
    media = b"application/json" if path == "/predict" else b"text/csv"
    before = scrape(one_worker)
    status, content_type, body = exchange(
        one_worker, template % (path.encode(), media), close_early=close_early
    )
    assert status == 400, body
    assert content_type == PROBLEM
    problem = json.loads(body)
    assert problem["type"] == "/problems/unreadable-body" and problem["status"] == 400
    assert "body" in problem["detail"] and "Traceback" not in problem["detail"]
    after = scrape(one_worker)
    route = "/predict" if path == "/predict" else "/v1/models/<name>/predict/csv"
    assert after.value("http_requests_total", route=route, status="400") == (
        before.value("http_requests_total", route=route, status="400") + 1
    )
    assert after.value("http_errors_total", type="unreadable-body") == (
        before.value("http_errors_total", type="unreadable-body") + 1
    )
    assert not [status for (status,) in after.by("http_requests_total", "status") if status.startswith("5")]


# --- 2. The audit log's memory and a graceful stop -----------------------------------------


def test_the_audit_log_stays_bounded_and_a_stop_writes_every_line(
    demo_store_path: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    size = 30 * MIB
    server = launch(
        demo_store_path,
        tmp_path / "logs",
        SERVICE_WORKERS="1",
        SERVICE_THREADS="1",
        SERVICE_PREDICTION_LOG=str(audit),
        SERVICE_GRACEFUL_TIMEOUT="30",
    )
    try:
        wait_until_answering(server)
        pid = worker_pid(server)
        warm_up = post_csv(server, iris_csv(MIB))
        assert warm_up.status_code == 200, warm_up.text[:500]
        idle = rss(pid)
        started = time.monotonic()
        response = post_csv(server, iris_csv(size))
        assert response.status_code == 200, response.text[:500]
        seconds = time.monotonic() - started
        growth = peak_rss(pid) - idle
        server.proc.send_signal(signal.SIGTERM)  # at once: the writer may still hold queued lines
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()
    written = 0
    with audit.open("rb") as handle:
        while piece := handle.read(MIB):
            written += piece.count(b"\n")
    print(f"\n{size // MIB} MiB CSV, audit log on: {seconds:.1f}s, peak RSS {growth / MIB:.1f} MiB over idle")
    assert written == iris_csv_rows(MIB) + iris_csv_rows(size)
    assert growth <= 150 * MIB
    assert "dropped" not in server.stdout()


# --- 3. A wide CSV header ------------------------------------------------------------------


def test_a_header_of_forty_thousand_columns_is_refused_without_memory(one_worker: Server) -> None:
    pid = worker_pid(one_worker)
    assert post_csv(one_worker, iris_csv(MIB)).status_code == 200
    before = peak_rss(pid)
    header = b",".join(b"c%d" % index for index in range(40_000)) + b"\n"
    upload = header + b"1\n" * ((286 * 1024 - len(header)) // 2)
    response = post_csv(one_worker, upload)
    assert response.status_code == 413, response.text[:500]
    assert response.content_type == PROBLEM and response.json()["type"] == "/problems/too-many-columns"
    assert "40000 columns; at most 1000" in response.json()["detail"]
    assert peak_rss(pid) - before <= 16 * MIB


def test_short_rows_under_the_widest_header_keep_memory_and_answer_bounded(one_worker: Server) -> None:
    pid = worker_pid(one_worker)
    assert post_csv(one_worker, iris_csv(MIB)).status_code == 200
    before = peak_rss(pid)
    header = IRIS_HEADER + b"".join(b",c%d" % index for index in range(996)) + b"\n"
    good = b"5.1,3.5,1.4,0.2" + b",1" * 996 + b"\n"
    response = post_csv(one_worker, header + good * 1100 + b"1\n" * 500_000)
    # The first chunk (1,048 lines under this header) is good, so the answer has begun when the
    # ragged rows pass the limit: it ends with a row that says so, never 500,000 padded rows.
    assert response.status_code == 200, response.text[:500]
    *_, stop = response.text.rstrip("\r\n").rsplit("\r\n", 1)
    assert "Scoring stopped: More than 1000 rows have another number of cells" in stop
    assert len(response.content) < 4 * MIB  # 1,100 rows and 1,000 padded ones of 1,000 columns
    assert peak_rss(pid) - before <= 48 * MIB


# --- 9. Error answers are capped -----------------------------------------------------------


def test_a_body_of_unknown_keys_gets_a_short_answer(one_worker: Server) -> None:
    body = json.dumps({f"k{index}": 1 for index in range(300_000)}, separators=(",", ":")).encode()
    assert 3 * MIB < len(body) < 4 * MIB
    with local_session() as session:
        started = time.monotonic()
        response = session.post(
            one_worker.url("/predict"), data=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        seconds = time.monotonic() - started
    assert response.status_code == 422
    problem = response.json()
    print(
        f"\n300,000 unknown keys ({len(body)} bytes): {len(response.content)}-byte answer in {seconds:.2f}s"
    )
    assert len(response.content) < 16 * 1024
    assert len(problem["errors"]) == 100 and problem["errors_omitted"] == 300_004 - 100
    assert list(problem["errors"])[:6] == [
        "sepal_length", "sepal_width", "petal_length", "petal_width", "k0", "k1"
    ]  # fmt: skip


# --- 8. A reload keeps the metrics; no temporary directory outlives the server -------------


def metrics_directories(tmp: Path) -> list[str]:
    return sorted(entry.name for entry in tmp.iterdir() if entry.name.startswith("sklearn-service-metrics-"))


def test_sighup_keeps_counters_and_model_gauges(demo_store_path: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with running_server(demo_store_path, tmp_path / "logs", TMPDIR=str(tmp)) as server:
        row = {"features": [5.1, 3.5, 1.4, 0.2]}
        with local_session() as session:
            for _ in range(5):
                assert (
                    session.post(server.url("/predict"), json=row, timeout=REQUEST_TIMEOUT).status_code == 200
                )
        before = scrape(server)
        assert before.value("predictions_total", model="iris", outcome="success") == 5
        assert len(metrics_directories(tmp)) == 1
        old_workers = set(server.worker_pids())

        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            workers = set(server.worker_pids())
            if len(workers) == 2 and not workers & old_workers:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the workers were not replaced after SIGHUP:\n{server.output()}")

        after = scrape(server)
        assert after.value("predictions_total", model="iris", outcome="success") == 5
        assert after.value("http_requests_total", route="/predict", status="200") == 5
        for model in ("iris", "diabetes", "breast_cancer"):
            assert after.value("model_ready", model=model, version="1") == 1
            assert after.value("model_load_duration_seconds", model=model, version="1") > 0
        assert len(metrics_directories(tmp)) == 1
    assert server.proc.returncode == 0
    assert metrics_directories(tmp) == []


@pytest.mark.parametrize(
    "settings",
    [{"SERVICE_WORKERS": "many"}, {"SERVICE_MODEL_STORE": "/nonexistent/store"}],
    ids=["bad-setting", "no-models"],
)
def test_a_failed_start_leaves_no_temporary_directory(
    demo_store_path: Path, tmp_path: Path, settings: dict[str, str]
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = launch(demo_store_path, tmp_path / "logs", TMPDIR=str(tmp), **settings)
    assert wait_for_exit(server) != 0
    assert metrics_directories(tmp) == []


def test_a_port_in_use_leaves_no_temporary_directory(demo_store_path: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = launch(demo_store_path, tmp_path / "logs", TMPDIR=str(tmp), PORT=str(taken.getsockname()[1]))
        assert wait_for_exit(server) != 0
    assert metrics_directories(tmp) == []
