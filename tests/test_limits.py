"""Rate limits through the app (in-memory counts): the 429 sequence, its headers, whom it counts."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from service.config import ConfigError, Settings
from service.keyring import add_client

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def limited(make_app: Callable[..., Flask], demo_store_path: Path) -> Callable[..., Flask]:
    def build(**settings: object) -> Flask:
        return make_app(model_store=demo_store_path, **settings)

    return build


def test_the_limit_lets_n_requests_through_then_answers_429_problems(limited: Callable[..., Flask]) -> None:
    client = limited(rate_limit="3/minute").test_client()
    answers = [client.post("/predict", json=SETOSA) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["type"] == "/problems/too-many-requests" and problem["status"] == 429
    assert "3 per 1 minute" in problem["detail"]
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert int(refused.headers["X-RateLimit-Reset"]) > 0
    assert refused.headers["X-Request-ID"]


def test_all_prediction_routes_share_one_budget(limited: Callable[..., Flask]) -> None:
    client = limited(rate_limit="2/minute").test_client()
    assert client.post("/predict", json=SETOSA).status_code == 200
    assert client.post("/v1/models/iris/predict/batch", json={"instances": [ROW]}).status_code == 200
    csv = b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
    assert client.post("/v1/models/iris/predict/csv", data=csv, content_type="text/csv").status_code == 429


def test_probes_metrics_and_reads_are_not_counted_as_predictions(limited: Callable[..., Flask]) -> None:
    client = limited(rate_limit="1/minute").test_client()
    assert client.post("/predict", json=SETOSA).status_code == 200
    for path in ("/health", "/ready", "/metrics", "/v1/models", "/v1/models/iris", "/openapi.json"):
        for _ in range(3):
            assert client.get(path).status_code == 200, path
    assert client.post("/predict", json=SETOSA).status_code == 429


def test_reads_have_their_own_limit(limited: Callable[..., Flask]) -> None:
    client = limited(rate_limit_read="2/minute").test_client()
    assert [client.get("/v1/models/iris").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json=SETOSA).status_code == 200


def test_each_address_has_its_own_budget(limited: Callable[..., Flask]) -> None:
    client = limited(rate_limit="1/minute").test_client()
    first = {"REMOTE_ADDR": "10.0.0.1"}
    assert client.post("/predict", json=SETOSA, environ_base=first).status_code == 200
    assert client.post("/predict", json=SETOSA, environ_base=first).status_code == 429
    assert client.post("/predict", json=SETOSA, environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200


def test_with_keys_each_client_has_its_own_budget_wherever_it_calls_from(
    limited: Callable[..., Flask], tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys"
    alice, bob = add_client(keys_file, "alice", None), add_client(keys_file, "bob", None)
    client = limited(rate_limit="2/minute", api_keys_file=keys_file).test_client()
    for address in ("10.0.0.1", "10.0.0.2"):
        answer = client.post(
            "/predict", json=SETOSA, headers={"X-API-Key": alice}, environ_base={"REMOTE_ADDR": address}
        )
        assert answer.status_code == 200
    assert client.post("/predict", json=SETOSA, headers={"X-API-Key": alice}).status_code == 429
    assert client.post("/predict", json=SETOSA, headers={"X-API-Key": bob}).status_code == 200
    # Refused for its key, a request spends nobody's budget.
    for _ in range(3):
        assert client.post("/predict", json=SETOSA, headers={"X-API-Key": "sks_wrong"}).status_code == 401
    assert client.post("/predict", json=SETOSA, headers={"X-API-Key": bob}).status_code == 200


def test_a_rows_budget_charges_a_batch_its_rows(limited: Callable[..., Flask]) -> None:
    client = limited(rate_limit_rows="10/minute").test_client()
    assert client.post("/predict/batch", json={"instances": [ROW] * 8}).status_code == 200
    assert client.post("/predict", json=SETOSA).status_code == 200  # 9 of 10
    # Let in while some budget is left, and charged in full once answered.
    assert client.post("/predict/batch", json={"instances": [ROW] * 5}).status_code == 200
    refused = client.post("/predict", json=SETOSA)
    assert refused.status_code == 429
    assert "10 per 1 minute" in refused.get_json()["detail"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_storage_lets_requests_through_counted_and_logged_once(
    limited: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = limited(rate_limit="1/minute", rate_limit_storage=f"redis://127.0.0.1:{_closed_port()}/0")
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="flask-limiter"):
        statuses = [client.post("/predict", json=SETOSA).status_code for _ in range(4)]
    assert statuses == [200] * 4
    metrics = client.get("/metrics").get_data(as_text=True)
    errors = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("sklearn_service_rate_limit_storage_errors_total ")
    )
    assert errors >= 4
    logged = [record for record in caplog.records if record.name == "flask-limiter"]
    assert len(logged) == 1 and "let through" in logged[0].getMessage()


def test_the_openapi_document_declares_429_where_limits_apply(limited: Callable[..., Flask]) -> None:
    document = limited(rate_limit="5/second").test_client().get("/openapi.json").get_json()
    assert "429" in document["paths"]["/v1/models/iris/predict"]["post"]["responses"]
    assert "429" in document["paths"]["/v1/models/{name}/predict/csv"]["post"]["responses"]
    assert "429" not in document["paths"]["/v1/models"]["get"]["responses"]
    assert "429" not in document["paths"]["/health"]["get"]["responses"]


def test_a_rows_budget_alone_declares_429_on_the_json_routes_only(limited: Callable[..., Flask]) -> None:
    paths = limited(rate_limit_rows="1000/minute").test_client().get("/openapi.json").get_json()["paths"]
    assert "429" in paths["/v1/models/iris/predict/batch"]["post"]["responses"]
    assert "429" not in paths["/v1/models/{name}/predict/csv"]["post"]["responses"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SERVICE_RATE_LIMIT", "lots"), ("SERVICE_RATE_LIMIT_ROWS", "10 per fortnight")],
)
def test_a_limit_that_does_not_parse_stops_the_start(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_a_bad_storage_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"SERVICE_RATE_LIMIT_STORAGE": "mysql://user:hunter2@db/limits"})
    assert "SERVICE_RATE_LIMIT_STORAGE" in str(refused.value) and "hunter2" not in str(refused.value)
