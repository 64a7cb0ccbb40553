"""The streamed CSV answer through Flask's test client: sent while the upload is read, ended early with
its reason, and the request (metrics, log, prediction request) closed when the stream ends however
it ends. The same on the real server, over a socket, is in tests/test_csv_gunicorn.py."""

from __future__ import annotations

import csv
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.csv_files import scoring as csv_scoring
from tests.observed import scrape

IRIS_HEADER = "id,sepal_length,sepal_width,petal_length,petal_width"
GOOD_ROW = "5.1,3.5,1.4,0.2"
OUTPUTS = 6  # prediction, three probabilities, error, warnings


class Upload(io.RawIOBase):
    """A request body that counts what the app has read, and may fail after ``fail_after`` bytes."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._fail_after = fail_after
        self.size = len(data)

    @property
    def read_so_far(self) -> int:
        return self._data.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._data.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._data.seek(offset, whence)

    def readinto(self, buffer: Any) -> int:
        if self._fail_after is not None and self.read_so_far >= self._fail_after:
            raise ConnectionResetError("the client went away")  # as a server's socket read would
        return self._data.readinto(buffer)


def iris_text(rows: int, bad: dict[int, str] | None = None) -> bytes:
    lines = [IRIS_HEADER] + [f"{index},{GOOD_ROW}" for index in range(rows)]
    for line, text in (bad or {}).items():
        lines[line - 1] = text
    return ("\n".join(lines) + "\n").encode()


def post_stream(client: FlaskClient, upload: Upload, query: str = "") -> Any:
    """A chunked upload (no Content-Length), the answer not yet read."""
    return client.post(
        f"/v1/models/iris/predict/csv{query}",
        input_stream=upload,
        headers={"Content-Type": "text/csv", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
        buffered=False,
    )


def rows_of(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 100 lines; a read of 4 KiB from the body at a time."""
    monkeypatch.setattr(csv_scoring, "CHUNK_ROWS", 100)
    monkeypatch.setattr("service.csv_files.reading.READ_SIZE", 4096)


@pytest.mark.usefixtures("small_chunks")
def test_the_answer_starts_before_the_upload_is_read_and_has_no_length(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    upload = Upload(iris_text(5000))  # about 110 KB
    response = post_stream(client, upload)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "Content-Length" not in response.headers
    assert response.headers["Content-Disposition"] == 'attachment; filename="iris-predictions.csv"'
    pieces = iter(response.response)
    first = next(pieces)
    assert rows_of(first)[0][:5] == IRIS_HEADER.split(",")
    assert len(rows_of(first)) == 1 + 100  # the header and the first chunk
    assert upload.read_so_far < 16 * 1024  # a few reads into a 110 KB upload
    more = [next(pieces) for _ in range(10)]
    assert upload.read_so_far < 40 * 1024  # read as the answer is written, never far ahead of it
    answer = rows_of(b"".join([first, *more, *pieces]))
    response.close()
    assert upload.read_so_far == upload.size
    assert len(answer) == 1 + 5000
    assert [row[0] for row in answer[1:]] == [str(index) for index in range(5000)]
    assert all(row[5] == "setosa" and row[-2] == "" for row in answer[1:])


@pytest.mark.usefixtures("small_chunks")
def test_metrics_and_the_prediction_request_end_with_the_stream(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    response = post_stream(client, Upload(iris_text(1000)))
    pieces = iter(response.response)
    next(pieces)
    # From another thread, as another request would be served: this one keeps its context while it streams.
    with ThreadPoolExecutor(1) as other:
        during = other.submit(scrape, fresh_app.test_client()).result()
    assert during.value("http_requests_in_flight") == 2  # the stream and the scrape itself
    assert during.value("http_requests_total", route="/v1/models/<name>/predict/csv") == 0
    assert during.value("prediction_rows_per_request_count") == 0  # the request is not over
    b"".join(pieces)
    response.close()
    after = scrape(fresh_app.test_client())
    assert after.value("http_requests_in_flight") == 1
    assert after.value("http_requests_total", route="/v1/models/<name>/predict/csv", status="200") == 1
    assert after.value("http_request_duration_seconds_count", route="/v1/models/<name>/predict/csv") == 1
    assert after.value("prediction_rows_per_request_sum", model="iris") == 1000
    assert after.value("predictions_total", model="iris", outcome="success") == 1000
    assert after.value("http_errors_total") == 0


@pytest.mark.usefixtures("small_chunks")
def test_a_client_that_goes_away_mid_answer_ends_the_request(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    upload = Upload(iris_text(1000))
    response = post_stream(client, upload)
    next(iter(response.response))
    response.close()  # as the server does when the client's socket fails
    after = scrape(fresh_app.test_client())
    assert after.value("http_requests_in_flight") == 1
    assert after.value("http_requests_total", route="/v1/models/<name>/predict/csv", status="200") == 1
    assert after.value("prediction_rows_per_request_count", model="iris") == 1  # the request was closed
    assert after.value("prediction_rows_per_request_sum", model="iris") == 100  # what was scored


@pytest.mark.usefixtures("small_chunks")
def test_an_upload_over_the_limit_mid_stream_ends_the_answer_with_its_reason(
    make_app: Any, demo_store_path: Path, capture_json_logs: io.StringIO
) -> None:
    app = make_app(model_store=demo_store_path, max_upload_bytes=20_000)
    upload = Upload(iris_text(5000))
    response = post_stream(app.test_client(), upload, "")
    data = response.get_data()
    response.close()
    answer = rows_of(data)
    assert answer[1][5] == "setosa"
    stop = answer[-1]
    assert stop[:-2] + stop[-1:] == [""] * (5 + OUTPUTS - 1)  # empty but the error
    assert (
        stop[-2].startswith("line ")
        and "Scoring stopped: The upload is larger than the limit of 20000 bytes." in (stop[-2])
    )
    first_missing = int(stop[-2].split()[1].rstrip(":"))
    assert [row[0] for row in answer[1:-1]] == [str(index) for index in range(first_missing - 2)]
    assert upload.read_so_far <= 20_000 + 4096 + 1  # not drained past the limit
    metrics = scrape(app.test_client())
    assert metrics.value("http_errors_total", type="request-entity-too-large") == 1
    assert metrics.value("http_requests_total", route="/v1/models/<name>/predict/csv", status="200") == 1
    (record,) = [json.loads(line) for line in capture_json_logs.getvalue().splitlines() if "stopped" in line]
    assert record["level"] == "WARNING" and record["route"] == "/v1/models/<name>/predict/csv"
    assert record["request_id"] and record["model"] == "iris"


@pytest.mark.usefixtures("small_chunks")
def test_a_body_that_cannot_be_read_mid_stream_ends_the_answer_with_its_reason(fresh_app: Flask) -> None:
    upload = Upload(iris_text(5000), fail_after=30_000)
    response = post_stream(fresh_app.test_client(), upload)
    answer = rows_of(response.get_data())
    response.close()
    assert answer[1][5] == "setosa"
    assert "Scoring stopped: The request body could not be read to its end" in answer[-1][-2]
    assert scrape(fresh_app.test_client()).value("http_errors_total", type="unreadable-body") == 1


@pytest.mark.usefixtures("small_chunks")
def test_a_stopped_answer_still_reads_what_the_client_sends(fresh_app: Flask) -> None:
    """After a fault that stops scoring, the rest of the upload is read (up to the limit) and dropped."""
    upload = Upload(iris_text(3000, {2500: '1,"never closed,5.1,3.5,1.4,0.2'}))
    response = post_stream(fresh_app.test_client(), upload)
    answer = rows_of(response.get_data())
    response.close()
    assert answer[-1][-2].startswith(
        "line 2500: Scoring stopped: Line 2500 opens a quoted cell that is never closed."
    )
    assert upload.read_so_far == upload.size


def test_on_error_fail_is_sent_whole_with_its_length(client: FlaskClient) -> None:
    response = client.post(
        "/v1/models/iris/predict/csv?on_error=fail", data=iris_text(300), content_type="text/csv"
    )
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.get_data())
    assert len(rows_of(response.get_data())) == 301


def test_stream_false_sends_the_same_rows_after_the_upload_with_its_length(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For clients that send everything before they read: the streamed answer's rows, bad ones in place."""
    monkeypatch.setattr(csv_scoring, "CHUNK_ROWS", 100)  # several chunks
    text = iris_text(450, {7: "5,5.1,wide,1.4,0.2", 302: "300,5.1,3.5,1.4,"})
    streamed = client.post("/v1/models/iris/predict/csv", data=text, content_type="text/csv")
    upload = Upload(text)
    after = client.post(
        "/v1/models/iris/predict/csv?stream=false",
        input_stream=upload,
        headers={"Content-Type": "text/csv", "Content-Length": str(len(text))},
    )
    assert after.status_code == streamed.status_code == 200
    assert "Content-Length" not in streamed.headers
    assert int(after.headers["Content-Length"]) == len(after.get_data())
    assert after.get_data() == streamed.get_data()
    assert upload.read_so_far == upload.size
    errors = [row[-2] for row in rows_of(after.get_data())[1:] if row[-2]]
    assert errors == [
        "line 7: sepal_width: Not a valid number.",
        "line 302: petal_width: Missing value: the cell is empty.",
    ]
    bad = client.post("/v1/models/iris/predict/csv?stream=maybe", data=text, content_type="text/csv")
    assert bad.status_code == 422 and list(bad.get_json()["errors"]) == ["stream"]


def test_a_multipart_upload_is_streamed_too(client: FlaskClient) -> None:
    response = client.post(
        "/v1/models/iris/predict/csv",
        data={"file": (io.BytesIO(iris_text(20, {5: "x,5.1,3.5,1.4,y"})), "f.csv")},
        content_type="multipart/form-data",
    )
    assert "Content-Length" not in response.headers
    answer = rows_of(response.get_data())
    assert [row[-2] for row in answer[1:]] == [
        "line 5: petal_width: Not a valid number." if i == 3 else "" for i in range(20)
    ]
