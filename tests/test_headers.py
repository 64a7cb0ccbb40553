"""Security headers on every answer, and CORS from an allow-list."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.config import ConfigError, Settings
from service.keyring import add_client

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ALLOWED = "https://dashboard.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,x-api-key",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/health"), ("GET", "/v1/models"), ("POST", "/predict"), ("GET", "/nowhere"), ("GET", "/docs")],
)
def test_every_answer_says_nosniff(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, json=SETOSA)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_predictions_and_their_errors_are_never_stored(client: FlaskClient) -> None:
    for response in (
        client.post("/predict", json=SETOSA),
        client.post("/v1/models/iris/predict/batch", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        client.post("/predict", json={"sepal_length": "x"}),
    ):
        assert response.headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/v1/models/iris").headers.get("Cache-Control", "")


@pytest.fixture
def cors(make_app: Callable[..., Flask], demo_store_path: Path) -> FlaskClient:
    return make_app(model_store=demo_store_path, cors_origins=(ALLOWED,)).test_client()


def test_a_preflight_from_an_allowed_origin_passes(cors: FlaskClient) -> None:
    answer = cors.options("/v1/models/iris/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert {"POST"} <= set(answer.headers["Access-Control-Allow-Methods"].replace(" ", "").split(","))
    allowed = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "x-api-key" in allowed and "content-type" in allowed
    assert "Origin" in answer.headers.get("Vary", "")


def test_an_allowed_origin_reads_the_answer_and_its_headers(cors: FlaskClient) -> None:
    answer = cors.post("/predict", json=SETOSA, headers={"Origin": ALLOWED})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "https://dashboard.example.com.evil.io", "null"]
)
def test_another_origin_gets_no_cors_headers(cors: FlaskClient, origin: str) -> None:
    preflight = cors.options("/v1/models/iris/predict", headers={"Origin": origin, **PREFLIGHT})
    answer = cors.post("/predict", json=SETOSA, headers={"Origin": origin})
    for response in (preflight, answer):
        assert not [name for name, _ in response.headers if name.startswith("Access-Control-")]


def test_without_origins_no_answer_carries_cors_headers(client: FlaskClient) -> None:
    answer = client.options("/v1/models/iris/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_a_preflight_needs_no_key_and_spends_no_budget(
    make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path
) -> None:
    key = add_client(tmp_path / "keys", "web", None)
    client = make_app(
        model_store=demo_store_path,
        cors_origins=(ALLOWED,),
        api_keys_file=tmp_path / "keys",
        rate_limit="1/minute",
    ).test_client()
    for _ in range(3):
        preflight = client.options("/predict", headers={"Origin": ALLOWED, **PREFLIGHT})
        assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    answer = client.post("/predict", json=SETOSA, headers={"Origin": ALLOWED, "X-API-Key": key})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "value", ["*", "https://example.com/path", "example.com", "https://a.com,ftp://b.com"]
)
def test_origins_must_be_exact(value: str) -> None:
    with pytest.raises(ConfigError, match="SERVICE_CORS_ORIGINS"):
        Settings.from_env({"SERVICE_CORS_ORIGINS": value})


def test_origins_are_read_as_a_list() -> None:
    settings = Settings.from_env({"SERVICE_CORS_ORIGINS": "https://a.example.com, http://localhost:3000"})
    assert settings.cors_origins == ("https://a.example.com", "http://localhost:3000")
