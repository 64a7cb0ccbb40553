"""Prometheus metrics: what was asked, how fast, how it ended, by which model version.

Under Gunicorn every worker is a process of its own. With
``PROMETHEUS_MULTIPROC_DIR`` set (``gunicorn.conf.py`` does it), each process
writes its samples to files in that directory and ``GET /metrics`` sums them,
so the figures are exact over all workers. Without it (Flask's test client, a
single process), the app keeps its own registry.

Labels stay low-cardinality: route templates (never raw paths), a fixed set of
methods, status codes, model names and versions, problem types.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Any

import numpy as np
from flask import Blueprint, Flask, current_app, g, request
from flask.wrappers import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import values as prometheus_values

from service.api.openapi import documented
from service.api.streaming import stream_pending
from service.models.core import Observer, Outcome
from service.models.loaded import LoadedModel

EXTENSION_KEY = "metrics"
NAMESPACE = "sklearn_service"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_WAIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

bp = Blueprint("metrics", __name__)


def multiprocess_mode() -> bool:
    """True when prometheus_client stores samples in files shared by all workers."""
    return prometheus_values.ValueClass is not prometheus_values.MutexValue


class ServiceMetrics(Observer):
    """Every metric of the service; as an observer of the prediction core, it counts rows."""

    def __init__(self) -> None:
        # In multiprocess mode the samples live in files, not in a registry.
        self.registry = None if multiprocess_mode() else CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        common: dict[str, Any] = {"namespace": NAMESPACE, "registry": self.registry}
        self.requests = Counter(
            "http_requests", "HTTP requests answered.", ["route", "method", "status"], **common
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, in the service.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            **common,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "Requests being answered now.", multiprocess_mode="livesum", **common
        )
        self.errors = Counter("http_errors", "Error answers, by problem type.", ["type"], **common)
        self.grpc_requests = Counter(
            "grpc_requests", "gRPC calls answered, by status code.", ["method", "code"], **common
        )
        self.grpc_request_duration = Histogram(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call, in the service.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            **common,
        )
        self.rate_limit_storage_errors = Counter(
            "rate_limit_storage_errors",
            "Rate limit checks that could not reach their storage; the requests were let through.",
            **common,
        )
        # Only with API keys on: one series per client named in the keys file.
        self.client_requests = Counter(
            "client_requests", "Requests answered per API client, by status.", ["client", "status"], **common
        )
        self.predictions = Counter(
            "predictions", "Rows predicted or refused.", ["model", "version", "outcome"], **common
        )
        self.flagged_values = Counter(
            "flagged_values",
            "Values served with a warning (outside the training data's range, an unseen category), "
            "by model and feature.",
            ["model", "feature"],
            **common,
        )
        self.outliers = Counter(
            "predicted_outliers",
            "Rows an outlier detector answered with -1 (an outlier): a rising share is drift to look at.",
            ["model", "version"],
            **common,
        )
        self.prediction_duration = Histogram(
            "prediction_duration_seconds",
            "Time of the model call alone, per request.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            **common,
        )
        self.rows_per_request = Histogram(
            "prediction_rows_per_request", "Rows in one prediction request.", ["model"], buckets=_ROW_BUCKETS,
            **common,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "batch_rows",
            "Rows in one model call the batcher gathered from concurrent requests.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            **common,
        )
        self.batch_wait = Histogram(
            "batch_wait_seconds",
            "Time a request waited in its model's batching queue before its model call started.",
            ["model"],
            buckets=_WAIT_BUCKETS,
            **common,
        )
        self.audit_lines_dropped = Counter(
            "audit_lines_dropped", "Prediction audit log lines that could not be written.", **common
        )
        self.model_load_duration = Gauge(
            "model_load_duration_seconds",
            "Time to load, verify and warm up a model at start.",
            ["model", "version"],
            multiprocess_mode="mostrecent",
            **common,
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 if the model version loaded and serves, else 0.",
            ["model", "version"],
            multiprocess_mode="mostrecent",
            **common,
        )

        self.model_runtime = Gauge(
            "model_serving_info",
            "1 for the runtime that predicts for the model version: onnx (its compiled artifact) or sklearn.",
            ["model", "version", "runtime"],
            multiprocess_mode="mostrecent",
            **common,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept for the next request: prometheus_client checks and
        converts the labels on each call (a microsecond or more, nine times a request), and
        the label sets are few (see the module's docstring)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def show_runtimes(self, entries: list[Any]) -> None:
        for entry in entries:
            if entry.model is not None:
                for runtime in ("onnx", "sklearn"):
                    shown = 1 if runtime == entry.model.runtime else 0
                    self.model_runtime.labels(entry.name, entry.version, runtime).set(shown)

    def scored(self, outcome: Outcome) -> None:
        model = outcome.model
        if outcome.invalid:
            self.child(self.predictions, model.name, model.version, "invalid").inc(outcome.invalid)
        if outcome.failed:
            self.child(self.predictions, model.name, model.version, "error").inc(outcome.failed)
        if outcome.prediction is not None:
            self.child(self.prediction_duration, model.name).observe(outcome.seconds)
            if outcome.waited is not None:
                self.child(self.batch_wait, model.name).observe(outcome.waited)
            self.child(self.predictions, model.name, model.version, "success").inc(len(outcome.rows))
        if outcome.flags:
            flagged = Tally(name for found in outcome.flags.values() for name in found)
            for feature, count in flagged.items():
                self.child(self.flagged_values, model.name, feature).inc(count)
        if outcome.prediction is not None and model.has_scores:
            outliers = int(np.count_nonzero(outcome.prediction.values == -1))
            self.child(self.outliers, model.name, model.version).inc(outliers)

    def finished(self, model: LoadedModel, rows: int) -> None:
        self.child(self.rows_per_request, model.name).observe(rows)

    def batched(self, model: LoadedModel, rows: int, requests: int) -> None:
        self.child(self.batch_rows, model.name).observe(rows)

    def render(self) -> bytes:
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


def metrics() -> ServiceMetrics:
    return current_app.extensions[EXTENSION_KEY]


@bp.get("/metrics")
@documented("Prometheus metrics", media_type="text/plain", tag="health")
def scrape() -> Response:
    """Counters, histograms and gauges in the Prometheus text format, summed over all workers."""
    return Response(
        metrics().render(), mimetype=CONTENT_TYPE_LATEST.split(";")[0], content_type=CONTENT_TYPE_LATEST
    )


# The hooks below take the request and ``g`` from their proxies once: each use of a
# proxy costs a context lookup, and they run on every request.


def _start() -> None:
    g._get_current_object().started = time.perf_counter()
    metrics().in_flight.inc()


def _finish(response: Response) -> Response:
    found, sent = g._get_current_object(), request._get_current_object()
    elapsed = time.perf_counter() - found.get("started", time.perf_counter())
    rule = sent.url_rule
    found.route = route = rule.rule if rule is not None else "unmatched"
    found.status = str(response.status_code)
    # Until the headers for a streamed answer (service.api.streaming): its body is still to come.
    response.headers["X-Process-Time"] = f"{elapsed:.6f}"
    # For the access log, which Gunicorn writes after the response has left.
    sent.environ["service.route"] = route
    return response


def _end(_: BaseException | None) -> None:
    found = g._get_current_object()
    # A streamed answer's request ends with its stream: the teardown when the view returned is not the last.
    if "started" not in found or stream_pending():
        return
    recorded = metrics()
    recorded.in_flight.dec()
    if "status" not in found:  # no response was made (an error in another after_request hook)
        return
    method = request.method
    method = method if method in _METHODS else "other"
    recorded.child(recorded.requests, found.route, method, found.status).inc()
    recorded.child(recorded.request_duration, found.route).observe(time.perf_counter() - found.started)
    if "problem_type" in found:
        recorded.child(recorded.errors, found.problem_type).inc()
    if "client" in found:
        recorded.child(recorded.client_requests, found.client.name, found.status).inc()
    found.pop("started")


def init_app(app: Flask, registry_entries: list[Any]) -> ServiceMetrics:
    recorded = ServiceMetrics()
    app.extensions[EXTENSION_KEY] = recorded
    for entry in registry_entries:
        version = entry.version or "none"
        recorded.model_ready.labels(entry.name, version).set(1 if entry.ready else 0)
        if entry.load_seconds is not None:
            recorded.model_load_duration.labels(entry.name, version).set(entry.load_seconds)
    recorded.show_runtimes(registry_entries)
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_end)
    return recorded
