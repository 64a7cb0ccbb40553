"""Observability: request ids, Prometheus metrics, JSON logs and the prediction audit log.

The unit tests use Flask's test client: without ``PROMETHEUS_MULTIPROC_DIR``
each app keeps a registry of its own, so a fresh app counts from zero. The
integration test puts a mixed load on real Gunicorn with two workers and checks
that the metrics summed over both workers, the access log and the audit file
all account for exactly what the client sent.
"""

from __future__ import annotations

import collections
import importlib
import io
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from service.logs import logging_config
from service.models import ModelStore
from tests.helpers import random_rows as manifest_rows
from tests.servers import JSON, REQUEST_TIMEOUT, Server, http, running_server

PREFIX = "sklearn_service_"
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.9, "sepal_width": 3.1, "petal_length": 5.4, "petal_width": 2.1}
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")
DEMO_MODELS = ("breast_cancer", "diabetes", "iris")
UUID_HEX = re.compile(r"^[0-9a-f]{32}$")
SHUTDOWN_NOISE = re.compile(r"^sys:1: ResourceWarning: unclosed file <_io\.BufferedRandom name='[^']+\.db'>$")
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


# --- Reading /metrics -------------------------------------------------------------------


class Metrics:
    """One scrape, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == PREFIX + name and labels.items() <= sample.labels.items()
        )

    def by(self, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
        """The samples named ``name``, summed per combination of ``label_names``."""
        totals: dict[tuple[str, ...], float] = collections.defaultdict(float)
        for sample in self.samples:
            if sample.name == PREFIX + name:
                totals[tuple(sample.labels[label] for label in label_names)] += sample.value
        return dict(totals)

    def label_sets(self, name: str) -> set[frozenset[tuple[str, str]]]:
        return {frozenset(sample.labels.items()) for sample in self.samples if sample.name == PREFIX + name}

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of one histogram series, by bound."""
        bounds = [
            (float(sample.labels["le"]), sample.value)
            for sample in self.samples
            if sample.name == PREFIX + name + "_bucket"
            and labels.items() <= sample.labels.items()
            and sample.labels.keys() - {"le"} == labels.keys()
        ]
        return sorted(bounds)


def scrape(client: FlaskClient) -> Metrics:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return Metrics(response.get_data(as_text=True))


def check_histogram(metrics: Metrics, name: str, **labels: str) -> None:
    """Buckets never decrease, +Inf holds every observation, and the sum is positive."""
    buckets = metrics.buckets(name, **labels)
    assert buckets, f"no buckets for {name} {labels}"
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), (name, labels, buckets)
    assert buckets[-1][0] == math.inf
    assert buckets[-1][1] == metrics.value(name + "_count", **labels)
    assert metrics.value(name + "_sum", **labels) > 0


# --- Request bodies ------------------------------------------------------------------------


def post(client: FlaskClient, path: str, body: Any, request_id: str | None = None) -> Any:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return client.post(path, data=json.dumps(body), content_type=JSON, headers=headers)


def random_rows(store: Path, name: str, rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Valid rows for a stored model, drawn across each feature's accepted range."""
    return manifest_rows(ModelStore(store).manifest(name, "1").features, rng, count)


def feature_names(store: Path, name: str) -> tuple[str, ...]:
    return ModelStore(store).manifest(name, "1").feature_names


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def fresh_app(make_app: Callable[..., Flask], demo_store_path: Path) -> Flask:
    """An app of this test alone: its metrics start at zero."""
    return make_app(model_store=demo_store_path)


# --- X-Request-ID and X-Process-Time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/health", 200),
        ("GET", "/metrics", 200),
        ("POST", "/predict", 200),
        ("GET", "/no/such/route", 404),
        ("GET", "/predict", 405),
        ("POST", "/v1/models/no_such_model/predict", 404),
    ],
)
def test_every_response_carries_request_id_and_process_time(
    fresh_app: Flask, method: str, path: str, status: int
) -> None:
    client = fresh_app.test_client()
    body = json.dumps(SETOSA) if method == "POST" else None
    own = client.open(path, method=method, data=body, content_type=JSON, headers={"X-Request-ID": "abc-1"})
    assert own.status_code == status
    assert own.headers["X-Request-ID"] == "abc-1"
    assert float(own.headers["X-Process-Time"]) >= 0
    assert re.fullmatch(r"\d+\.\d{6}", own.headers["X-Process-Time"])

    new = client.open(path, method=method, data=body, content_type=JSON)
    assert new.status_code == status
    assert UUID_HEX.match(new.headers["X-Request-ID"])
    assert float(new.headers["X-Process-Time"]) >= 0


def test_well_formed_request_ids_are_kept(fresh_app: Flask) -> None:
    client = fresh_app.test_client()
    for request_id in ("a", "A.b_c-d:e", "0" * 128, "2f1c9e4e-5d1a-4a86-9c43-6f7b0e1b3f5a"):
        response = client.get("/health", headers={"X-Request-ID": request_id})
        assert response.headers["X-Request-ID"] == request_id


def test_malformed_request_ids_are_replaced(fresh_app: Flask) -> None:
    """Too long, empty or with characters that could forge a log line: a fresh id instead."""
    client = fresh_app.test_client()
    seen = set()
    for request_id in ("", "x" * 129, "two words", 'quo"te', "<script>", "a;b", "id\tx", "é"):
        response = client.get("/health", headers={"X-Request-ID": request_id})
        replaced = response.headers["X-Request-ID"]
        assert replaced != request_id
        assert UUID_HEX.match(replaced)
        seen.add(replaced)
    assert len(seen) == 8  # a new id each time


def test_a_500_quotes_the_request_id_of_its_header(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(model_store=tmp_path)
    app.add_url_rule("/boom", "boom", boom)
    response = app.test_client().get("/boom", headers={"X-Request-ID": "report-me"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "report-me"
    assert response.get_json()["request_id"] == "report-me"
    assert "kaboom" not in response.get_data(as_text=True)


def boom() -> Any:
    raise RuntimeError("kaboom: an internal detail")


# --- /metrics with the test client -----------------------------------------------------------


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
    assert post(client, "/v1/models/iris/predict", {**SETOSA, "petal_length": 1000.0}).status_code == 422

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
    assert post(client, "/v1/models/iris/predict", {**SETOSA, "sepal_width": -5}).status_code == 422
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

    invalid_pair = [SETOSA, {**VIRGINICA, "petal_width": 99.0}]
    assert post(client, "/v1/models/iris/predict/batch", invalid_pair).status_code == 422
    assert post(client, "/predict", SETOSA).status_code == 200
    rng = random.Random(1)
    store = fresh_app.extensions["service"].settings.model_store
    rows = random_rows(store, "diabetes", rng, 4)
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


# --- The prediction audit log with the test client ----------------------------------------------


def read_audit(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_audit_log_has_one_line_per_predicted_row(
    make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    app = make_app(model_store=demo_store_path, prediction_log=audit_path)
    client = app.test_client()
    rng = random.Random(5)
    diabetes_rows = random_rows(demo_store_path, "diabetes", rng, 2)
    diabetes_names = feature_names(demo_store_path, "diabetes")

    # Refused requests first: none of them writes a line.
    truncated = json.dumps(SETOSA)[:-3]
    one_invalid = [SETOSA, {**SETOSA, "petal_length": -1}]
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
    make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    app = make_app(model_store=demo_store_path, prediction_log=audit_path)
    client = app.test_client()
    assert post(client, "/v1/models/iris/predict", {**SETOSA, "petal_length": 1000.0}).status_code == 422
    assert post(client, "/v1/models/iris/predict/batch", [SETOSA, None]).status_code in {400, 422}
    assert post(client, "/v1/models/nope/predict", SETOSA).status_code == 404
    app.extensions["service"].audit.close()
    assert not audit_path.exists() or audit_path.read_text() == ""


def test_no_audit_log_unless_configured(fresh_app: Flask) -> None:
    assert fresh_app.extensions["service"].audit is None
    assert post(fresh_app.test_client(), "/predict", SETOSA).status_code == 200


# --- JSON logs ------------------------------------------------------------------------------------


def build(spec: dict[str, Any]) -> Any:
    """An object from a dictConfig ``{"()": "module.Class", **kwargs}`` entry."""
    kwargs = dict(spec)
    module, _, name = kwargs.pop("()").rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


@pytest.fixture
def capture_json_logs() -> Iterator[io.StringIO]:
    """The service's app log handler (JSON formatter and request filter, as configured for
    Gunicorn by ``logging_config``) writing to a StringIO, on the root logger for this test only."""
    config = logging_config("INFO")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(build(config["formatters"]["json"]))
    for name in config["handlers"]["app"]["filters"]:
        handler.addFilter(build(config["filters"][name]))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def json_records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


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


# --- Real Gunicorn, two workers, a mixed load --------------------------------------------------


@dataclass
class Sent:
    """One request of the load and everything it must leave behind."""

    request_id: str
    method: str
    path: str
    status: int
    route: str  # the metrics label, and the access log's route
    problem: str | None = None
    model: str | None = None  # in the access log
    data: bytes | None = None
    content_type: str | None = JSON
    rows: list[dict[str, Any]] | None = None  # rows read from the body, if the request got that far
    many: bool = False
    response: requests.Response | None = None

    @property
    def method_label(self) -> str:
        return self.method if self.method in STANDARD_METHODS else "other"

    @property
    def outcome(self) -> str | None:
        if self.rows is None:
            return None
        return "success" if self.status == 200 else "invalid"


def load_plan(store: Path, prefix: str, seed: int) -> list[Sent]:
    """300 requests: predictions of every shape on three models, and every kind of client error."""
    rng = random.Random(seed)
    plan: list[Sent] = []

    def add(**fields: Any) -> None:
        plan.append(Sent(request_id=f"{prefix}-{len(plan)}", **fields))

    def prediction(
        path: str,
        route: str,
        model: str,
        body: Any,
        rows: list[dict[str, Any]],
        many: bool,
        status: int = 200,
        problem: str | None = None,
    ) -> None:
        add(
            method="POST",
            path=path,
            status=status,
            route=route,
            problem=problem,
            model=model,
            data=json.dumps(body).encode(),
            rows=rows,
            many=many,
        )

    one = "/v1/models/<name>/predict"
    batch = "/v1/models/<name>/predict/batch"
    iris_names = feature_names(store, "iris")
    diabetes_names = feature_names(store, "diabetes")
    for _ in range(40):
        rows = random_rows(store, "iris", rng, 1)
        prediction("/predict", "/predict", "iris", rows[0], rows, many=False)
    for _ in range(30):
        rows = random_rows(store, "iris", rng, 1)
        prediction("/v1/models/iris/predict", one, "iris", {"features": rows[0]}, rows, many=False)
    for _ in range(30):
        rows = random_rows(store, "iris", rng, rng.randint(2, 5))
        as_lists = [[row[name] for name in iris_names] for row in rows]
        prediction("/v1/models/iris/predict", one, "iris", {"instances": as_lists}, rows, many=True)
    for _ in range(30):
        rows = random_rows(store, "breast_cancer", rng, rng.randint(1, 8))
        prediction("/v1/models/breast_cancer/predict/batch", batch, "breast_cancer", rows, rows, many=True)
    for _ in range(25):
        rows = random_rows(store, "diabetes", rng, 1)
        prediction("/v1/models/diabetes/predict", one, "diabetes", rows[0], rows, many=False)
    for _ in range(25):
        rows = random_rows(store, "diabetes", rng, 3)
        as_lists = [[row[name] for name in diabetes_names] for row in rows]
        prediction("/v1/models/diabetes/predict/batch", batch, "diabetes", as_lists, rows, many=True)
    for _ in range(15):  # a 2-row batch with one row out of range: 2 invalid rows
        rows = random_rows(store, "iris", rng, 2)
        rows[1]["petal_length"] = 1000.0
        prediction("/v1/models/iris/predict/batch", batch, "iris", rows, rows, True, 422, "invalid-input")
    for _ in range(10):
        rows = random_rows(store, "diabetes", rng, 1)
        rows[0]["age"] = 1000
        prediction("/v1/models/diabetes/predict", one, "diabetes", rows[0], rows, False, 422, "invalid-input")
    for _ in range(15):
        [row] = random_rows(store, "iris", rng, 1)
        add(
            method="POST",
            path="/v1/models/no_such_model/predict",
            status=404,
            route=one,
            problem="model-not-found",
            data=json.dumps(row).encode(),
        )
    for index in range(15):
        add(method="GET", path=f"/no/such/route/{index}", status=404, route="unmatched", problem="not-found")
    for _ in range(15):
        [row] = random_rows(store, "iris", rng, 1)
        add(
            method="POST",
            path="/predict",
            status=415,
            route="/predict",
            problem="unsupported-media-type",
            model="iris",
            data=json.dumps(row).encode(),
            content_type="text/plain",
        )
    for _ in range(15):
        [row] = random_rows(store, "iris", rng, 1)
        add(
            method="POST",
            path="/predict",
            status=400,
            route="/predict",
            problem="malformed-request",
            model="iris",
            data=json.dumps(row).encode()[:-3],
        )
    for _ in range(10):
        add(method="GET", path="/predict", status=405, route="unmatched", problem="method-not-allowed")
    for _ in range(5):
        add(
            method="PURGE",
            path="/v1/models/iris/predict",
            status=405,
            route="unmatched",
            problem="method-not-allowed",
        )
    for _ in range(10):
        add(method="GET", path="/health", status=200, route="/health")
    for _ in range(10):
        add(method="GET", path="/v1/models/iris", status=200, route="/v1/models/<name>")
    assert len(plan) == 300
    rng.shuffle(plan)
    return plan


def send(server: Server, sent: Sent) -> requests.Response:
    headers = {"X-Request-ID": sent.request_id}
    if sent.content_type and sent.data is not None:
        headers["Content-Type"] = sent.content_type
    return http(sent.method, server.url(sent.path), data=sent.data, headers=headers, timeout=REQUEST_TIMEOUT)


def server_metrics(server: Server, request_id: str) -> Metrics:
    response = http("GET", server.url("/metrics"), headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return Metrics(response.text)


def wait_for_access_records(
    server: Server, request_ids: set[str], timeout: float = 10.0
) -> dict[str, list[dict[str, Any]]]:
    """The access records of ``request_ids``, once all are written (Gunicorn logs after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for record in server.access_log():
            if record.get("request_id") in request_ids:
                found[record["request_id"]].append(record)
        if set(found) == request_ids or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def diff(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] - before.get(key, 0)}


@pytest.mark.integration
def test_metrics_logs_and_audit_account_for_a_mixed_load_on_two_workers(
    demo_store_path: Path, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    sent: list[Sent] = []
    with running_server(
        demo_store_path, tmp_path / "logs", SERVICE_WORKERS="2", SERVICE_PREDICTION_LOG=str(audit_path)
    ) as server:
        before = server_metrics(server, "scrape-before")

        # The load, from 8 threads; another (bounded) round only if one worker took it all.
        worker_pids: set[int] = set()
        for round_number in range(4):
            plan = load_plan(demo_store_path, f"load{round_number}", seed=round_number)
            with ThreadPoolExecutor(max_workers=8) as pool:
                for item, response in zip(plan, pool.map(lambda item: send(server, item), plan), strict=True):
                    item.response = response
            sent += plan
            logged = wait_for_access_records(server, {item.request_id for item in plan})
            worker_pids |= {record["pid"] for records in logged.values() for record in records}
            if len(worker_pids) >= 2:
                break
        assert len(worker_pids) == 2, f"only workers {worker_pids} served the load"
        assert server.proc.pid not in worker_pids

        failures = []
        for item in sent:
            response = item.response
            assert response is not None
            if response.status_code != item.status:
                failures.append(f"{item.method} {item.path}: {response.status_code} {response.text[:200]}")
                continue
            assert response.headers["X-Request-ID"] == item.request_id
            assert float(response.headers["X-Process-Time"]) >= 0
            if item.problem is not None:
                assert response.json()["type"] == f"/problems/{item.problem}"
        assert not failures, f"{len(failures)} of {len(sent)} answers were unexpected:\n" + "\n".join(
            failures[:10]
        )

        after = server_metrics(server, "scrape-after")
        check_metrics(before, after, sent)
        assert server.stop() == 0  # SIGTERM to the master: workers drain and exit, then the master

    check_logs(server, sent, worker_pids)
    check_access_log_matches_metrics(server, after)
    served_by = {record["request_id"]: record["pid"] for record in server.access_log()}
    check_audit(audit_path, sent, served_by)


def check_metrics(before: Metrics, after: Metrics, sent: list[Sent]) -> None:
    """The scrape after the load minus the one before is exactly the load (and the first scrape)."""
    requests_sent = collections.Counter((item.route, item.method_label, str(item.status)) for item in sent)
    requests_sent["/metrics", "GET", "200"] += 1  # the scrape before, counted once answered
    labels = ("route", "method", "status")
    assert (
        diff(after.by("http_requests_total", *labels), before.by("http_requests_total", *labels))
        == requests_sent
    )

    by_route = collections.Counter((route,) for route, _, _ in requests_sent.elements())
    assert (
        diff(
            after.by("http_request_duration_seconds_count", "route"),
            before.by("http_request_duration_seconds_count", "route"),
        )
        == by_route
    )
    for (route,) in by_route:
        check_histogram(after, "http_request_duration_seconds", route=route)

    errors = collections.Counter((item.problem,) for item in sent if item.problem)
    assert diff(after.by("http_errors_total", "type"), before.by("http_errors_total", "type")) == errors

    rows = collections.Counter()
    for item in sent:
        if item.rows is not None:
            rows[item.model, "1", item.outcome] += len(item.rows)
    assert before.by("predictions_total", "model", "version", "outcome") == {}
    assert after.by("predictions_total", "model", "version", "outcome") == rows
    assert set(rows) >= {(name, "1", "success") for name in DEMO_MODELS}
    assert {("iris", "1", "invalid"), ("diabetes", "1", "invalid")} <= set(rows)

    predicted = collections.Counter((item.model,) for item in sent if item.outcome == "success")
    assert after.by("prediction_duration_seconds_count", "model") == predicted
    for (model,) in predicted:
        check_histogram(after, "prediction_duration_seconds", model=model)

    read = [item for item in sent if item.rows is not None]
    assert after.by("prediction_rows_per_request_count", "model") == collections.Counter(
        (item.model,) for item in read
    )
    row_sums: dict[tuple[str, ...], float] = collections.defaultdict(float)
    for item in read:
        row_sums[(item.model,)] += len(item.rows or ())
    assert after.by("prediction_rows_per_request_sum", "model") == row_sums
    for model in DEMO_MODELS:
        check_histogram(after, "prediction_rows_per_request", model=model)

    assert after.value("http_requests_in_flight") == 1  # the scrape itself
    assert after.by("model_ready", "model", "version") == {(name, "1"): 1 for name in DEMO_MODELS}
    assert all(
        seconds > 0 for seconds in after.by("model_load_duration_seconds", "model", "version").values()
    )
    print_excerpt(after)


def print_excerpt(metrics: Metrics) -> None:
    """A few lines of the scrape, shown with ``pytest -s``."""
    wanted = (
        "sklearn_service_http_requests_total{",
        "sklearn_service_http_errors_total",
        "sklearn_service_predictions_total",
        "sklearn_service_http_request_duration_seconds_count",
        "sklearn_service_prediction_duration_seconds_count",
        "sklearn_service_prediction_rows_per_request_sum",
        "sklearn_service_model_ready",
        "sklearn_service_http_requests_in_flight",
    )
    print("\n".join(line for line in metrics.text.splitlines() if line.startswith(wanted)))


def check_logs(server: Server, sent: list[Sent], worker_pids: set[int]) -> None:
    """Every stdout line is a JSON record; every request sent is in exactly one access record."""
    records = server.log_records()  # fails on any line that is not a JSON object
    # Nothing on stderr but what CPython itself prints while a worker's interpreter
    # shuts down, after logging has gone: prometheus_client keeps its sample files
    # open for the life of the process, which is a ResourceWarning if the warnings
    # filters no longer ignore it. They sometimes do not: scikit-learn's parallel
    # helpers swap the process-wide filters without a lock, and two threads
    # predicting at once can leave them empty.
    unexpected = [
        line for line in server.stderr().splitlines() if line.strip() and not SHUTDOWN_NOISE.match(line)
    ]
    assert not unexpected, "\n".join(unexpected[:20])
    master = server.proc.pid
    for record in records:
        assert {"level", "logger", "message", "pid", "timestamp"} <= record.keys(), record
        assert isinstance(record["pid"], int)
        datetime.fromisoformat(record["timestamp"])

    access: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for record in records:
        if record["logger"] == "gunicorn.access":
            access[record["request_id"]].append(record)
    wrong = []
    for item in sent:
        logged = access.get(item.request_id, [])
        if len(logged) != 1:
            wrong.append(f"{item.request_id}: {len(logged)} access records")
            continue
        [record] = logged
        expected = {
            "method": item.method,
            "path": item.path,
            "status": item.status,
            "route": item.route,
            "model": item.model,
            "version": "1" if item.model else None,
        }
        got = {key: record.get(key) for key in expected}
        if got != expected:
            wrong.append(f"{item.request_id}: {got} != {expected}")
        if (
            record["pid"] not in worker_pids
            or not isinstance(record["duration"], float)
            or record["duration"] < 0
        ):
            wrong.append(f"{item.request_id}: pid or duration: {record}")
    assert not wrong, f"{len(wrong)} of {len(sent)} requests were logged wrong:\n" + "\n".join(wrong[:10])
    assert len(access["scrape-after"]) == 1

    app_records = [record for record in records if record["logger"] != "gunicorn.access"]
    loads = [
        r
        for r in app_records
        if r["logger"] == "service.models.registry" and r["message"].startswith("loaded model")
    ]
    assert len(loads) == 3 and all(record["pid"] == master for record in loads), loads
    booted = {r["pid"] for r in app_records if r["message"].startswith("Booting worker with pid")}
    assert worker_pids <= booted
    assert any(r["message"] == "Shutting down: Master" and r["pid"] == master for r in app_records)
    assert not [r for r in app_records if r["level"] in {"ERROR", "CRITICAL"}]


def check_access_log_matches_metrics(server: Server, after: Metrics) -> None:
    """Everything the access log holds up to the last scrape (the readiness polls, the first
    scrape and the load) is what that scrape counted, summed over both workers."""
    logged: collections.Counter[tuple[str, ...]] = collections.Counter()
    for record in server.access_log():
        if record["request_id"] != "scrape-after":
            method = record["method"] if record["method"] in STANDARD_METHODS else "other"
            logged[record["route"], method, str(record["status"])] += 1
    assert after.by("http_requests_total", "route", "method", "status") == logged


def check_audit(path: Path, sent: list[Sent], served_by: dict[str, int]) -> None:
    """One whole JSON line per predicted row, matching what the client was answered."""
    lines = read_audit(path)  # a torn or interleaved line would not parse
    succeeded = {item.request_id: item for item in sent if item.outcome == "success"}
    assert len(lines) == sum(len(item.rows or ()) for item in succeeded.values())

    by_request: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for line in lines:
        by_request[line["request_id"]].append(line)
    assert set(by_request) == set(succeeded)
    # Both workers appended to the one file.
    assert len({served_by[request_id] for request_id in by_request}) == 2
    for request_id, entries in by_request.items():
        item = succeeded[request_id]
        assert item.response is not None and item.rows is not None
        body = item.response.json()
        entries.sort(key=lambda entry: entry["row"])
        assert [entry["row"] for entry in entries] == list(range(len(item.rows))), request_id
        values = body["predictions"] if item.many else [body["prediction"]]
        probabilities = body.get("probabilities")
        if probabilities is not None and not item.many:
            probabilities = [probabilities]
        for entry, row, value in zip(entries, item.rows, values, strict=True):
            assert (entry["model"], entry["version"]) == (item.model, "1")
            assert entry["inputs"] == row
            assert entry["output"] == value
            datetime.fromisoformat(entry["time"])
        if probabilities is None:
            assert all("probabilities" not in entry for entry in entries)
        else:
            assert [entry["probabilities"] for entry in entries] == probabilities
