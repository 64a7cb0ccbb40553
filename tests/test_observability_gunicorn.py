"""Metrics, logs and the audit log together, on real Gunicorn with two workers.

A mixed load (tests/mixed_load.py) goes to the real server; afterwards the
metrics summed over both workers, the access log and the audit file must all
account for exactly what the client sent. Each recorder's own tests, with
Flask's test client, are test_metrics.py, test_logs.py and test_audit.py.
"""

from __future__ import annotations

import collections
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import DEMO_MODELS
from tests.mixed_load import STANDARD_METHODS, Sent, load_plan
from tests.observed import Metrics, check_histogram, read_audit
from tests.servers import REQUEST_TIMEOUT, Server, http, running_server

SHUTDOWN_NOISE = re.compile(r"^sys:1: ResourceWarning: unclosed file <_io\.BufferedRandom name='[^']+\.db'>$")


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
        if record["logger"] == "service.access":
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

    app_records = [record for record in records if record["logger"] != "service.access"]
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
