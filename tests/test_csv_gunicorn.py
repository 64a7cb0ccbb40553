"""CSV files through the real Gunicorn server: streamed up, scored in chunks, streamed back while
the upload still arrives.

The answer is read while the file is sent (``local_gunicorn.DuplexUpload``, a client that
does both, as curl does). One worker, so that its memory can be read from /proc: its peak
resident set (VmHWM) must not grow with the file. Every wait is bounded; the big uploads
take some tens of seconds on 2 cores.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn import datasets

from local_gunicorn import DuplexUpload, peak_rss
from tests.observed import Metrics
from tests.servers import REQUEST_TIMEOUT, Server, http, local_session, running_server, worker_pid

pytestmark = pytest.mark.integration

ROWS = 1_000_000
BIG_TIMEOUT = 300  # seconds any one socket operation may wait in a million-row request
COLUMNS = ("id", "petal_width", "sepal_length", "petal_length", "sepal_width")
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# The worker's peak resident memory (VmHWM) may rise by at most PEAK_GROWTH_LIMIT while a
# million-row file (20 MB up, 95 MB down) goes through after a 100,000-row file went
# through first: memory that grew with the file would add at least the file's 20 MB. In
# all, CSV scoring may add at most PEAK_LIMIT to the worker's peak from before any file
# (one chunk in the making and its answer).
PEAK_GROWTH_LIMIT = 16 * 1024 * 1024
PEAK_LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def server(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        demo_store_path,
        tmp_path_factory.mktemp("csv_server"),
        # One worker with one thread: every request runs on the same thread, so on the same
        # malloc arena, and the worker's peak memory compares from one request to the next.
        SERVICE_WORKERS="1",
        SERVICE_THREADS="1",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def iris_rows(server: Server) -> list[tuple[str, str]]:
    """The 150 iris rows as CSV text (in COLUMNS order, without id), with the JSON API's label for each."""
    data = datasets.load_iris(as_frame=True).data.set_axis(list(FEATURES), axis=1)
    records = data.to_dict(orient="records")
    with local_session() as session:
        response = session.post(
            server.url("/v1/models/iris/predict/batch"), json={"instances": records}, timeout=30
        )
    assert response.status_code == 200, response.text
    texts = [",".join(repr(record[column]) for column in COLUMNS[1:]) for record in records]
    return list(zip(texts, response.json()["predictions"], strict=True))


def generated_file(rows: list[tuple[str, str]], count: int, bad_row: int | None = None) -> Iterator[bytes]:
    """The file in pieces of about 64 KiB, made as they are sent, never whole."""
    yield (",".join(COLUMNS) + "\n").encode()
    piece: list[str] = []
    for index in range(count):
        text = rows[index % len(rows)][0]
        if index == bad_row:
            text = "wide," + text.split(",", 1)[1]  # petal_width, the first feature column
        piece.append(f"{index},{text}\n")
        if len(piece) == 3000:
            yield "".join(piece).encode()
            piece = []
    yield "".join(piece).encode()


def score(server: Server, body: Iterator[bytes], path: str = "/v1/models/iris/predict/csv") -> DuplexUpload:
    """The file sent from a thread while the answer is read (use it as a context manager)."""
    return DuplexUpload(server.port, path, body, timeout=BIG_TIMEOUT)


def answer_lines(upload: DuplexUpload) -> Iterator[bytes]:
    """The answer's lines (CRLF-terminated) as they arrive, whatever the network's pieces."""
    pending = b""
    while piece := upload.response.read1(1 << 16):
        *complete, pending = (pending + piece).split(b"\r\n")
        yield from complete
    assert pending == b"", pending[:200]


def check_answer(upload: DuplexUpload, rows: list[tuple[str, str]], count: int) -> dict[int, str]:
    """Reads the answer as it streams in; every row must come back in order. Returns {row: error}."""
    response = upload.response
    assert response.status == 200, response.read(2000)
    assert response.getheader("Content-Type", "").startswith("text/csv")
    assert (
        response.getheader("Content-Length") is None and response.getheader("Transfer-Encoding") == "chunked"
    )
    lines = answer_lines(upload)
    probabilities = [f"probability_{label}" for label in ("setosa", "versicolor", "virginica")]
    assert next(lines).decode().split(",") == [*COLUMNS, "prediction", *probabilities, "error", "warnings"]
    errors: dict[int, str] = {}
    seen = 0
    for index, line in enumerate(lines):
        cells = line.decode().split(",", 10)  # the error cell (9) holds no comma; warnings follow
        assert cells[0] == str(index)
        if cells[9]:
            errors[index] = cells[9]
            assert cells[5] == ""
        else:
            assert cells[5] == rows[index % len(rows)][1], (index, line)
            assert abs(sum(map(float, cells[6:9])) - 1) < 1e-9
        seen += 1
    assert seen == count
    assert upload.done_sending.wait(REQUEST_TIMEOUT) and upload.send_error is None
    return errors


def test_a_million_rows_stream_through_in_bounded_memory(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    pid = worker_pid(server)
    initial = peak_rss(pid)
    with score(server, generated_file(iris_rows, 100_000)) as warm_up:
        assert check_answer(warm_up, iris_rows, 100_000) == {}
    before = peak_rss(pid)

    started = time.monotonic()
    with score(server, generated_file(iris_rows, ROWS)) as upload:
        first_byte = time.monotonic()
        sent_by_then = upload.sent
        assert check_answer(upload, iris_rows, ROWS) == {}
    finished = time.monotonic()
    after = peak_rss(pid)

    assert worker_pid(server) == pid  # the same worker did it all
    print(
        f"\n1,000,000 rows: first byte after {first_byte - started:.2f}s "
        f"({sent_by_then / 2**20:.1f} MiB sent by then), "
        f"all in {finished - started:.1f}s; worker VmHWM {initial / 2**20:.1f} MiB at first, "
        f"{before / 2**20:.1f} MiB after 100,000 rows, {after / 2**20:.1f} MiB after 1,000,000"
    )
    assert sent_by_then < 10 * 2**20  # the answer began long before the 20 MB upload was sent
    assert after - before <= PEAK_GROWTH_LIMIT, (initial, before, after)
    assert after - initial <= PEAK_LIMIT, (initial, before, after)


def test_a_bad_value_on_row_500000_is_answered_on_its_line(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    started = time.monotonic()
    with score(server, generated_file(iris_rows, ROWS, bad_row=499_999)) as upload:
        errors = check_answer(upload, iris_rows, ROWS)
    print(f"\n1,000,000 rows with a bad one: {time.monotonic() - started:.1f}s")
    # Data row 500,000 is on line 500,001: the header is line 1.
    assert errors == {499_999: "line 500001: petal_width: Not a valid number."}


# --- The streamed answer ------------------------------------------------------------------


def scrape(server: Server) -> Metrics:
    return Metrics(http("GET", server.url("/metrics")).text)


def test_bad_rows_of_the_first_chunk_are_answered_in_place(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    """A small file with ``requests`` (which sends it whole before it reads): chunked, no length."""
    text = generated_file(iris_rows, 50, bad_row=3)
    with local_session() as session:
        response = session.post(
            server.url("/v1/models/iris/predict/csv"),
            data=b"".join(text),
            headers={"Content-Type": "text/csv"},
            timeout=REQUEST_TIMEOUT,
        )
    assert response.status_code == 200 and response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    lines = response.text.split("\r\n")
    assert len(lines) == 1 + 50 + 1 and lines[-1] == ""
    assert lines[4].endswith(",,,,,line 5: petal_width: Not a valid number.,")  # no warnings
    predicted = [line.split(",")[5] for index, line in enumerate(lines[1:-1]) if index != 3]
    assert predicted == [label for index, (_, label) in enumerate(iris_rows[:50]) if index != 3]


def test_the_first_rows_arrive_while_the_client_is_still_sending(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    resume = threading.Event()

    def paused_file() -> Iterator[bytes]:
        pieces = generated_file(iris_rows, 30_000)
        sent_rows = -1  # the header
        for piece in pieces:
            yield piece
            sent_rows += piece.count(b"\n")
            # The first chunk is 10,000 rows; the server reads 64 KiB at a time, and Gunicorn's
            # read waits for all of it: 18,000 rows (about 340 KB) are more than enough.
            if sent_rows >= 18_000 and not resume.is_set():
                assert resume.wait(REQUEST_TIMEOUT)  # hold the rest back until the answer has begun

    with DuplexUpload(server.port, "/v1/models/iris/predict/csv", paused_file(), timeout=60) as upload:
        lines = answer_lines(upload)
        header = next(lines)
        first_rows = [next(lines) for _ in range(10_000)]  # the first chunk: while the upload waits
        assert not upload.done_sending.is_set()
        resume.set()
        rest = list(lines)
    assert header.startswith(b"id,petal_width") and len(first_rows) + len(rest) == 30_000
    assert first_rows[0].split(b",")[5].decode() == iris_rows[0][1]


def test_a_fault_mid_stream_ends_the_answer_with_its_reason_and_the_upload_is_still_read(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    def broken_file() -> Iterator[bytes]:
        pieces = generated_file(iris_rows, 80_000)
        yield from (next(pieces) for _ in range(9))  # the header and 24,000 rows: lines 1-24,001
        yield b'24000,"never closed,5.1,3.5,1.4,0.2\n'  # line 24,002: the rest is one unclosed cell
        yield from pieces  # 1.2 MB more

    route = "/v1/models/<name>/predict/csv"
    before = scrape(server)
    with score(server, broken_file()) as upload:
        assert upload.response.status == 200
        lines = list(answer_lines(upload))
        # The whole upload was read (and dropped) after the stop: the client could send it all.
        assert upload.done_sending.wait(REQUEST_TIMEOUT) and upload.send_error is None
    # Two chunks of 10,000 rows; the third holds the unclosed cell, which runs over the csv module's
    # field limit some lines on: none of its rows is answered. Then the row that says why it stopped.
    assert len(lines) == 1 + 20_000 + 1
    stop = re.fullmatch(
        rb",,,,,,,,,line (\d+): Scoring stopped: Line \1 cannot be read as CSV: "
        rb"field larger than field limit \(131072\)\. The rows from line 20002 on are not in this answer\.,",
        lines[-1],
    )
    assert stop is not None and int(stop.group(1)) > 24_002, lines[-1]
    after = scrape(server)
    errors = after.value("http_errors_total", type="invalid-input")
    assert errors == before.value("http_errors_total", type="invalid-input") + 1
    answered = after.value("http_requests_total", route=route, status="200")
    assert answered == before.value("http_requests_total", route=route, status="200") + 1
    deadline = time.monotonic() + REQUEST_TIMEOUT  # Gunicorn logs the access once the stream has ended
    while not (stopped := [r for r in server.log_records() if "CSV answer stopped" in r.get("message", "")]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    access = [
        record for record in server.access_log() if record.get("request_id") == stopped[-1]["request_id"]
    ]
    assert [(record["status"], record["route"], record["model"]) for record in access] == [
        (200, route, "iris")
    ]


def test_a_client_that_sends_everything_before_reading_gets_its_answer_with_stream_false(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    """``requests`` sends the whole body before reading: asked for after the upload, a million-row
    answer (larger than any socket buffer) comes back whole, with its length."""
    body = b"".join(generated_file(iris_rows, ROWS, bad_row=123_456))
    with local_session() as session:
        response = session.post(
            server.url("/v1/models/iris/predict/csv?stream=false"),
            data=body,
            headers={"Content-Type": "text/csv"},
            timeout=BIG_TIMEOUT,
        )
    assert response.status_code == 200, response.text[:500]
    assert int(response.headers["Content-Length"]) == len(response.content)
    lines = response.content.split(b"\r\n")
    assert len(lines) == 1 + ROWS + 1 and lines[-1] == b""
    assert b"line 123458: petal_width: Not a valid number." in lines[1 + 123_456]
