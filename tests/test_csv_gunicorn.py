"""A million-row CSV file through the real Gunicorn server: streamed up, scored in chunks, streamed back.

One worker, so that its memory can be read from /proc: its peak resident set
(VmHWM) must not grow with the file. Every wait is bounded; the big uploads
take some tens of seconds on 2 cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sklearn import datasets

from local_gunicorn import peak_rss
from tests.servers import Server, local_session, media_type, running_server, worker_pid

pytestmark = pytest.mark.integration

ROWS = 1_000_000
BIG_TIMEOUT = (10, 300)  # (connect, read) seconds for a million-row request
COLUMNS = ("id", "petal_width", "sepal_length", "petal_length", "sepal_width")
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# The worker's peak resident memory (VmHWM) may rise by at most PEAK_GROWTH_LIMIT while a
# million-row file (20 MB up, 95 MB down) goes through after a 100,000-row file went
# through first: memory that grew with the file would add at least the file's 20 MB. In
# all, CSV scoring may add at most PEAK_LIMIT to the worker's peak from before any file
# (it adds about 22 MiB: one chunk in the making and the spool's first 4 MiB).
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


def score(server: Server, body: Iterator[bytes]) -> requests.Response:
    with local_session() as session:
        return session.post(
            server.url("/v1/models/iris/predict/csv"),
            data=body,  # a generator: sent with Transfer-Encoding: chunked
            headers={"Content-Type": "text/csv"},
            stream=True,
            timeout=BIG_TIMEOUT,
        )


def answer_lines(response: requests.Response) -> Iterator[bytes]:
    """The answer's lines (CRLF-terminated) as they arrive, whatever the network's pieces."""
    pending = b""
    for piece in response.iter_content(chunk_size=1 << 16):
        *complete, pending = (pending + piece).split(b"\r\n")
        yield from complete
    assert pending == b"", pending[:200]


def check_answer(response: requests.Response, rows: list[tuple[str, str]], count: int) -> dict[int, str]:
    """Reads the answer as it streams in; every row must come back in order. Returns {row: error}."""
    assert response.status_code == 200, response.text[:2000]
    assert media_type(response) == "text/csv"
    lines = answer_lines(response)
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
    return errors


def test_a_million_rows_stream_through_in_bounded_memory(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    pid = worker_pid(server)
    initial = peak_rss(pid)
    warm_up = score(server, generated_file(iris_rows, 100_000))
    assert check_answer(warm_up, iris_rows, 100_000) == {}
    before = peak_rss(pid)

    started = time.monotonic()
    response = score(server, generated_file(iris_rows, ROWS))
    uploaded = time.monotonic()
    assert check_answer(response, iris_rows, ROWS) == {}
    finished = time.monotonic()
    after = peak_rss(pid)

    assert worker_pid(server) == pid  # the same worker did it all
    print(
        f"\n1,000,000 rows: upload and scoring {uploaded - started:.1f}s, "
        f"answer read {finished - uploaded:.1f}s; worker VmHWM {initial / 2**20:.1f} MiB at first, "
        f"{before / 2**20:.1f} MiB after 100,000 rows, {after / 2**20:.1f} MiB after 1,000,000"
    )
    assert after - before <= PEAK_GROWTH_LIMIT, (initial, before, after)
    assert after - initial <= PEAK_LIMIT, (initial, before, after)


def test_a_bad_value_on_row_500000_is_answered_on_its_line(
    server: Server, iris_rows: list[tuple[str, str]]
) -> None:
    started = time.monotonic()
    response = score(server, generated_file(iris_rows, ROWS, bad_row=499_999))
    errors = check_answer(response, iris_rows, ROWS)
    print(f"\n1,000,000 rows with a bad one: {time.monotonic() - started:.1f}s")
    # Data row 500,000 is on line 500,001: the header is line 1.
    assert errors == {499_999: "line 500001: petal_width: Not a valid number."}
