"""Prometheus metrics (``GET /metrics``, service/api/metrics.py) through Flask's test client.

Without ``PROMETHEUS_MULTIPROC_DIR`` each app keeps a registry of its own, so a
fresh app counts from zero. The same counts summed over two Gunicorn workers are
checked in test_observability_gunicorn.py.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.helpers import DEMO_MODELS, SETOSA, VIRGINICA, corrupt, post, stored_model_rows
from tests.observed import PREFIX, check_histogram, json_records, scrape
from tests.servers import JSON

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def test_metrics_count_exactly_the_requests_answered(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    first = scrape(client)
    # The scrape is counted once it has been answered: the first one sees nothing.
    assert first.value("http_requests_total") == 0
    assert first.value("http_requests_in_flight") == 1  # itself

    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert post(client, "/predict", SETOSA).status_code == 200
    assert post(client, "/v1/models/iris/predict", {"features": VIRGINICA}).status_code == 200
    assert client.get("/v1/models/iris").status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert post(client, "/v1/models/iris/predict", {**SETOSA, "petal_length": "x"}).status_code == 422

    metrics = scrape(client)
    assert metrics.by("http_requests_total", "route", "method", "status") == {
        ("/metrics", "GET", "200"): 1,
        ("/health", "GET", "200"): 3,
        ("/predict", "POST", "200"): 1,
        ("/v1/models/<name>/predict", "POST", "200"): 1,
        ("/v1/models/<name>", "GET", "200"): 1,
        ("unmatched", "GET", "404"): 1,
        ("/v1/models/<name>/predict", "POST", "422"): 1,
    }
    assert metrics.by("http_request_duration_seconds_count", "route") == {
        ("/metrics",): 1,
        ("/health",): 3,
        ("/predict",): 1,
        ("/v1/models/<name>/predict",): 2,
        ("/v1/models/<name>",): 1,
        ("unmatched",): 1,
    }
    for route in ("/health", "/predict", "/v1/models/<name>/predict", "unmatched"):
        check_histogram(metrics, "http_request_duration_seconds", route=route)
    assert metrics.by("prediction_duration_seconds_count", "model") == {("iris",): 2}
    check_histogram(metrics, "prediction_duration_seconds", model="iris")
    assert metrics.by("http_errors_total", "type") == {("not-found",): 1, ("invalid-input",): 1}
    assert metrics.value("http_requests_in_flight") == 1

    # And the next scrape counts this one.
    assert scrape(client).value("http_requests_total", route="/metrics") == 2


def test_metric_names_follow_prometheus_conventions(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    post(client, "/predict", SETOSA)
    client.get("/nowhere")
    metrics = scrape(client)
    # prometheus_client's own *_created series (absent in multiprocess mode) are not ours to name.
    families = {
        name: family
        for name, family in metrics.families.items()
        if name.startswith(PREFIX) and not name.endswith("_created")
    }
    expected = {
        "http_requests": "counter",
        "http_request_duration_seconds": "histogram",
        "http_requests_in_flight": "gauge",
        "http_errors": "counter",
        "predictions": "counter",
        "prediction_duration_seconds": "histogram",
        "prediction_rows_per_request": "histogram",
        "model_load_duration_seconds": "gauge",
        "model_ready": "gauge",
    }
    for name, kind in expected.items():
        assert families[PREFIX + name].type == kind, name
    for name, family in families.items():
        assert SNAKE_CASE.match(name), name
        assert family.documentation, f"{name} has no help text"
        if family.type == "counter":
            assert {s.name for s in family.samples} <= {name + "_total"}, name
        if "duration" in name or "latency" in name or "time" in name:
            assert name.endswith("_seconds"), f"{name}: durations are in seconds, named so"
        for sample in family.samples:
            for label in sample.labels:
                assert SNAKE_CASE.match(label), (name, label)
                assert label not in {"path", "url", "request_id", "query", "user_agent"}, (name, label)


def test_labels_stay_low_cardinality(fresh_app: Flask) -> None:
    """Fifty unknown paths are one route label; methods outside the standard set are 'other'."""
    client = fresh_app.test_client()
    rng = random.Random(11)
    for index in range(50):
        path = "/" + "/".join(f"{rng.getrandbits(40):x}" for _ in range(rng.randint(1, 4))) + f"?q={index}"
        assert client.get(path).status_code == 404
    for method in ("PURGE", "BREW", "PROPFIND", "FOO", "M-SEARCH"):
        assert client.open("/predict", method=method).status_code == 405
        assert client.open(f"/nowhere/{method}", method=method).status_code == 404
    for index in range(20):  # many model names that do not exist: one route template
        assert post(client, f"/v1/models/model_{index}/predict", SETOSA).status_code == 404

    metrics = scrape(client)
    assert metrics.by("http_requests_total", "route", "method", "status") == {
        ("unmatched", "GET", "404"): 50,
        ("unmatched", "other", "405"): 5,
        ("unmatched", "other", "404"): 5,
        ("/v1/models/<name>/predict", "POST", "404"): 20,
    }
    assert len(metrics.label_sets("http_request_duration_seconds_count")) == 2
    assert metrics.by("http_errors_total", "type") == {
        ("not-found",): 55,
        ("method-not-allowed",): 5,
        ("model-not-found",): 20,
    }
    # Unknown model names never become label values.
    assert "model_0" not in metrics.text
    assert not metrics.label_sets("predictions_total")
    assert len(metrics.text.splitlines()) < 250


def test_errors_are_counted_by_problem_type(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    truncated = json.dumps(SETOSA)[:-3]
    assert client.post("/predict", data=truncated, content_type=JSON).status_code == 400
    assert client.post("/predict", data=truncated, content_type=JSON).status_code == 400
    assert client.post("/predict", data=json.dumps(SETOSA), content_type="text/plain").status_code == 415
    assert post(client, "/v1/models/iris/predict", {**SETOSA, "sepal_width": None}).status_code == 422
    assert post(client, "/v1/models/nope/predict", SETOSA).status_code == 404
    assert client.get("/nope").status_code == 404
    assert client.get("/predict").status_code == 405
    assert post(client, "/predict", SETOSA).status_code == 200
    assert client.get("/health").status_code == 200

    metrics = scrape(client)
    assert metrics.by("http_errors_total", "type") == {
        ("malformed-request",): 2,
        ("unsupported-media-type",): 1,
        ("invalid-input",): 1,
        ("model-not-found",): 1,
        ("not-found",): 1,
        ("method-not-allowed",): 1,
    }
    # No rows reached a model in the refused requests, except the 422's single invalid row.
    assert metrics.by("predictions_total", "model", "version", "outcome") == {
        ("iris", "1", "invalid"): 1,
        ("iris", "1", "success"): 1,
    }


def test_predictions_are_counted_in_rows_by_model_version_and_outcome(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    three = [SETOSA, VIRGINICA, SETOSA]
    assert post(client, "/v1/models/iris/predict/batch", three).status_code == 200
    metrics = scrape(client)
    assert metrics.value("predictions_total", model="iris", version="1", outcome="success") == 3

    invalid_pair = [SETOSA, {**VIRGINICA, "petal_width": "99"}]
    assert post(client, "/v1/models/iris/predict/batch", invalid_pair).status_code == 422
    assert post(client, "/predict", SETOSA).status_code == 200
    rng = random.Random(1)
    store = fresh_app.extensions["service"].settings.model_store
    rows = stored_model_rows(store, "diabetes", rng, 4)
    assert post(client, "/v1/models/diabetes/predict/batch", {"instances": rows}).status_code == 200

    metrics = scrape(client)
    assert metrics.by("predictions_total", "model", "version", "outcome") == {
        ("iris", "1", "success"): 4,
        ("iris", "1", "invalid"): 2,
        ("diabetes", "1", "success"): 4,
    }
    # Rows per request: every request whose rows were read, valid or not.
    assert metrics.by("prediction_rows_per_request_count", "model") == {("iris",): 3, ("diabetes",): 1}
    assert metrics.by("prediction_rows_per_request_sum", "model") == {("iris",): 6, ("diabetes",): 4}
    assert metrics.buckets("prediction_rows_per_request", model="iris")[:3] == [(1, 1), (2, 2), (5, 3)]
    # The model's own time: only for the requests that reached it.
    assert metrics.by("prediction_duration_seconds_count", "model") == {("iris",): 2, ("diabetes",): 1}


def test_a_failing_model_counts_its_rows_as_errors(
    fresh_app: Flask, monkeypatch: pytest.MonkeyPatch, capture_json_logs: io.StringIO
) -> None:
    """A model that raises: a 500 prediction-failed problem, rows counted as 'error', logged with context."""
    estimator = fresh_app.extensions["service"].registry.get("iris").estimator

    def broken(*_: Any, **__: Any) -> Any:
        raise ValueError("the estimator broke")

    monkeypatch.setattr(estimator, "predict_proba", broken)  # the one pass iris makes
    client = fresh_app.test_client()
    response = post(client, "/v1/models/iris/predict/batch", [SETOSA, VIRGINICA], request_id="fail-1")
    assert response.status_code == 500
    assert response.get_json()["type"] == "/problems/prediction-failed"

    metrics = scrape(client)
    assert metrics.by("predictions_total", "model", "version", "outcome") == {("iris", "1", "error"): 2}
    assert metrics.by("http_errors_total", "type") == {("prediction-failed",): 1}
    assert metrics.value("prediction_duration_seconds_count") == 0

    [record] = [r for r in json_records(capture_json_logs) if r.get("request_id") == "fail-1"]
    assert record["level"] == "ERROR"
    assert record["route"] == "/v1/models/<name>/predict/batch"
    assert (record["method"], record["model"], record["version"]) == ("POST", "iris", "1")
    assert "the estimator broke" in record["exc_info"]


def test_model_ready_and_load_duration(fresh_app: Flask) -> None:
    metrics = scrape(fresh_app.test_client())
    assert metrics.by("model_ready", "model", "version") == {(name, "1"): 1 for name in DEMO_MODELS}
    durations = metrics.by("model_load_duration_seconds", "model", "version")
    assert set(durations) == {(name, "1") for name in DEMO_MODELS}
    assert all(0 < seconds < 60 for seconds in durations.values()), durations


def test_a_corrupted_model_is_not_ready(make_app: Callable[..., Flask], store_path: Path) -> None:
    corrupt(store_path / "diabetes" / "1" / "model.joblib")
    metrics = scrape(make_app(model_store=store_path).test_client())
    assert metrics.by("model_ready", "model", "version") == {
        ("breast_cancer", "1"): 1,
        ("diabetes", "1"): 0,
        ("iris", "1"): 1,
    }
    durations = metrics.by("model_load_duration_seconds", "model", "version")
    assert set(durations) == {("breast_cancer", "1"), ("iris", "1")}
    assert all(seconds > 0 for seconds in durations.values())
