"""JSON logs (service/logs.py): one JSON object per record, with the request's fields and its traceback."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from flask import Flask

from tests.helpers import boom
from tests.observed import json_records, scrape


def test_an_error_log_record_carries_the_request_and_its_traceback(
    make_app: Callable[..., Flask], tmp_path: Path, capture_json_logs: io.StringIO
) -> None:
    app = make_app(model_store=tmp_path)
    app.add_url_rule("/boom", "boom", boom)
    response = app.test_client().get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500

    lines = capture_json_logs.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # one whole JSON object per line
    [record] = [r for r in records if r.get("request_id") == "boom-1"]
    assert record["level"] == "ERROR"
    assert record["logger"] == "service.api.problems"
    assert (record["method"], record["route"]) == ("GET", "/boom")
    assert "boom-1" in record["message"]
    assert isinstance(record["pid"], int)
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None
    # The traceback is inside the same JSON object, not on lines of its own.
    assert "Traceback (most recent call last)" in record["exc_info"]
    assert "RuntimeError: kaboom: an internal detail" in record["exc_info"]
    assert all(line.startswith("{") for line in lines)

    metrics = scrape(app.test_client())
    assert metrics.by("http_requests_total", "route", "method", "status") == {("/boom", "GET", "500"): 1}
    assert metrics.by("http_errors_total", "type") == {("internal-error",): 1}


def test_a_log_record_outside_a_request_has_no_request_fields(capture_json_logs: io.StringIO) -> None:
    logging.getLogger("service.test").warning("outside %s", "any request")
    [record] = json_records(capture_json_logs)
    assert record["message"] == "outside any request"
    assert record["logger"] == "service.test"
    assert record["level"] == "WARNING"
    assert "request_id" not in record and "route" not in record


def test_the_app_writes_one_access_record_per_request_once_answered(
    make_app: Callable[..., Flask], demo_store_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_app(model_store=demo_store_path).test_client()
    capfd.readouterr()
    response = client.post(
        "/v1/models/iris/predict/batch?on_error=row&format=compact",
        json=[[5.1, 3.5, 1.4, 0.2]],
        headers={"X-Request-ID": "access-1"},
    )
    assert response.status_code == 200
    response.close()
    records = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    [record] = [r for r in records if r["logger"] == "service.access"]
    assert record["request_id"] == "access-1"
    assert (record["method"], record["path"], record["status"]) == (
        "POST",
        "/v1/models/iris/predict/batch",
        200,
    )
    assert record["message"] == "POST /v1/models/iris/predict/batch 200"
    assert record["route"] == "/v1/models/<name>/predict/batch"
    assert (record["model"], record["version"]) == ("iris", response.get_json()["model_version"])
    assert record["duration"] > 0 and isinstance(record["pid"], int)
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None
    assert "compact" not in json.dumps(record)  # the query string is never logged


def test_the_access_log_can_be_turned_off(
    make_app: Callable[..., Flask], demo_store_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    client = make_app(model_store=demo_store_path, access_log=False).test_client()
    capfd.readouterr()
    client.get("/health").close()
    assert "service.access" not in capfd.readouterr().out
