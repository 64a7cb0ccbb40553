"""The prediction audit log on its own: bounded queue, back-pressure, and lines never lost silently."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.audit import PredictionAuditLog
from service.models import Prediction

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
