"""The prediction audit log (service/audit.py): bounded queue, back-pressure, lines never lost
silently; and through the app, one line per predicted row and none for a refused request."""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask

from service.audit import PredictionAuditLog
from service.models import Prediction
from tests.helpers import SETOSA, VIRGINICA, feature_names, post, stored_model_rows
from tests.observed import read_audit
from tests.servers import JSON

FEATURES = ("a", "b")
CLASSES = ("no", "yes")


def batch(rows: int, start: int = 0) -> tuple[np.ndarray, Prediction]:
    inputs = np.arange(start, start + rows * 2, dtype=np.float64).reshape(rows, 2)
    values = np.array(["yes" if index % 2 else "no" for index in range(rows)], dtype=object)
    probabilities = np.tile([0.25, 0.75], (rows, 1))
    return inputs, Prediction(values=values, probabilities=probabilities, classes=CLASSES)


def record(audit: PredictionAuditLog, request_id: str, rows: int) -> None:
    inputs, prediction = batch(rows)
    audit.record(request_id, "m", "1", FEATURES, inputs, prediction)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_row_becomes_one_line_in_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = PredictionAuditLog(path, max_queued_values=50)
    for request in range(20):
        record(audit, f"r{request}", 7)
    audit.close()
    written = lines(path)
    assert len(written) == 140
    assert [(line["request_id"], line["row"]) for line in written] == [
        (f"r{request}", row) for request in range(20) for row in range(7)
    ]
    assert written[3]["inputs"] == {"a": 6.0, "b": 7.0}
    assert written[3]["output"] == "yes" and written[3]["probabilities"] == {"no": 0.25, "yes": 0.75}


def test_a_request_waits_while_the_queue_is_full(tmp_path: Path) -> None:
    # The log is a FIFO that nobody reads yet: the writer blocks once the pipe is full
    # (64 KiB), holding the first request's 1,000 rows (about 130 KiB of lines), which
    # is all the queue may hold; the next request must wait until the reader reads.
    path = tmp_path / "audit.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    audit = PredictionAuditLog(path, max_queued_values=5 * 1000)  # 1,000 rows of 5 values
    try:
        record(audit, "first", 1000)
        waiting = threading.Thread(target=record, args=(audit, "late", 1000))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive(), "the request did not wait for the writer"
        received = b""
        deadline = time.monotonic() + 30
        while received.count(b"\n") < 2000:
            assert time.monotonic() < deadline, received.count(b"\n")
            try:
                received += os.read(reader, 1 << 16)
            except BlockingIOError:
                time.sleep(0.01)
        waiting.join(5)
        assert not waiting.is_alive()
        ids = [json.loads(line)["request_id"] for line in received.splitlines()]
        assert ids == ["first"] * 1000 + ["late"] * 1000
    finally:
        audit.close(deadline=time.monotonic() + 5)
        os.close(reader)


def test_lines_left_at_the_deadline_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    dropped: list[int] = []
    audit = PredictionAuditLog(path, max_queued_values=10**9, on_dropped=dropped.append)
    rows = 0
    for index in range(200):
        record(audit, f"r{index}", 1000)
        rows += 1000
    with caplog.at_level(logging.ERROR, logger="service.audit"):
        audit.close(deadline=time.monotonic())  # already due: what is not written yet is dropped
    written = len(lines(path))
    assert written < rows
    assert sum(dropped) == rows - written
    [message] = [record.getMessage() for record in caplog.records]
    why = "the worker had to stop before they were written"
    assert message == f"prediction audit log: {rows - written} line(s) dropped: {why}"


def test_a_write_error_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    dropped: list[int] = []
    audit = PredictionAuditLog(path, on_dropped=dropped.append)
    record(audit, "before", 3)
    audit.close()
    audit = PredictionAuditLog(Path("/dev/full"), on_dropped=dropped.append)  # every write: ENOSPC
    record(audit, "refused", 5)
    record(audit, "refused-too", 4)
    audit.close()
    assert dropped == [5, 4]
    assert [line["request_id"] for line in lines(path)] == ["before"] * 3


def test_rows_recorded_after_close_are_counted(tmp_path: Path) -> None:
    dropped: list[int] = []
    audit = PredictionAuditLog(tmp_path / "audit.jsonl", on_dropped=dropped.append)
    record(audit, "first", 2)
    audit.close()
    record(audit, "late", 3)
    assert dropped == [3]
    assert [line["request_id"] for line in lines(tmp_path / "audit.jsonl")] == ["first", "first"]


def test_dropped_lines_reach_the_metric(make_app: Any, demo_store_path: Path, tmp_path: Path) -> None:
    app = make_app(model_store=demo_store_path, prediction_log=tmp_path / "audit.jsonl")
    client = app.test_client()
    row = {"features": [5.1, 3.5, 1.4, 0.2]}
    assert client.post("/predict", json=row).status_code == 200
    app.extensions["service"].audit.close()
    assert client.post("/predict/batch", json={"instances": [row["features"]] * 3}).status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "sklearn_service_audit_lines_dropped_total 3.0" in metrics


# --- Through the app: one line per predicted row, none for a refused request -------------

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")


@pytest.fixture
def audited(make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path) -> tuple[Flask, Path]:
    """An app over the demo models that writes its audit log to a fresh file."""
    path = tmp_path / "audit.jsonl"
    return make_app(model_store=demo_store_path, prediction_log=path), path


def test_audit_log_has_one_line_per_predicted_row(audited: tuple[Flask, Path], demo_store_path: Path) -> None:
    app, audit_path = audited
    client = app.test_client()
    rng = random.Random(5)
    diabetes_rows = stored_model_rows(demo_store_path, "diabetes", rng, 2)
    diabetes_names = feature_names(demo_store_path, "diabetes")

    # Refused requests first: none of them writes a line.
    truncated = json.dumps(SETOSA)[:-3]
    one_invalid = [SETOSA, {**SETOSA, "petal_length": "x"}]
    assert post(client, "/v1/models/iris/predict/batch", one_invalid).status_code == 422
    assert client.post("/predict", data=truncated, content_type=JSON).status_code == 400
    assert post(client, "/v1/models/nope/predict", SETOSA).status_code == 404
    assert client.post("/predict", data=json.dumps(SETOSA), content_type="text/plain").status_code == 415

    single = post(client, "/predict", SETOSA, request_id="audit-single")
    batch = post(
        client,
        "/v1/models/iris/predict",
        {"instances": [[row[name] for name in IRIS_FEATURES] for row in (VIRGINICA, SETOSA, VIRGINICA)]},
        request_id="audit-batch",
    )
    regression = post(
        client,
        "/v1/models/diabetes/predict/batch",
        [[row[name] for name in diabetes_names] for row in diabetes_rows],
        request_id="audit-regression",
    )
    unnamed = post(client, "/predict", VIRGINICA)  # the server's own request id
    for response in (single, batch, regression, unnamed):
        assert response.status_code == 200, response.get_data(as_text=True)
    app.extensions["service"].audit.close()

    lines = read_audit(audit_path)
    assert len(lines) == 1 + 3 + 2 + 1
    by_request: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for line in lines:
        assert set(line) >= {"time", "request_id", "model", "version", "row", "inputs", "output"}
        assert datetime.fromisoformat(line["time"]).tzinfo is not None
        by_request[line["request_id"]].append(line)
    assert set(by_request) == {
        "audit-single",
        "audit-batch",
        "audit-regression",
        unnamed.headers["X-Request-ID"],
    }

    [line] = by_request["audit-single"]
    body = single.get_json()
    assert (line["model"], line["version"], line["row"]) == ("iris", "1", 0)
    assert line["inputs"] == SETOSA
    assert line["output"] == body["prediction"] == "setosa"
    assert line["probabilities"] == body["probabilities"]
    assert list(line["probabilities"]) == list(IRIS_CLASSES)

    body = batch.get_json()
    rows = sorted(by_request["audit-batch"], key=lambda entry: entry["row"])
    assert [entry["row"] for entry in rows] == [0, 1, 2]
    assert [entry["inputs"] for entry in rows] == [VIRGINICA, SETOSA, VIRGINICA]  # named, from lists
    assert [entry["output"] for entry in rows] == body["predictions"]
    assert [entry["probabilities"] for entry in rows] == body["probabilities"]

    body = regression.get_json()
    rows = sorted(by_request["audit-regression"], key=lambda entry: entry["row"])
    assert [(entry["model"], entry["version"], entry["row"]) for entry in rows] == [
        ("diabetes", "1", 0),
        ("diabetes", "1", 1),
    ]
    assert [entry["inputs"] for entry in rows] == diabetes_rows
    assert list(rows[0]["inputs"]) == list(diabetes_names)
    assert [entry["output"] for entry in rows] == body["predictions"]
    assert all("probabilities" not in entry for entry in rows)


def test_audit_log_is_not_written_for_refused_requests(
    audited: tuple[Flask, Path], demo_store_path: Path
) -> None:
    app, audit_path = audited
    client = app.test_client()
    assert post(client, "/v1/models/iris/predict", {**SETOSA, "petal_length": "x"}).status_code == 422
    assert post(client, "/v1/models/iris/predict/batch", [SETOSA, None]).status_code in {400, 422}
    assert post(client, "/v1/models/nope/predict", SETOSA).status_code == 404
    app.extensions["service"].audit.close()
    assert not audit_path.exists() or audit_path.read_text() == ""


def test_no_audit_log_unless_configured(fresh_app: Flask) -> None:
    assert fresh_app.extensions["service"].audit is None
    assert post(fresh_app.test_client(), "/predict", SETOSA).status_code == 200
