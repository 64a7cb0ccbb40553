"""Faults on the server side: a 500 problem with a request id, the traceback only in the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.estimators import ExplodingRegressor
from tests.helpers import store_model


@pytest.fixture
def exploding_client(tmp_path: Path, make_app: Any) -> Any:
    X = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    store_model(tmp_path, ExplodingRegressor().fit(X, [0, 0, 0]), "exploding", "1")
    return make_app(model_store=tmp_path, default_model="exploding").test_client()


def test_model_failure_is_500_without_internals(
    exploding_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert exploding_client.post("/predict", json={"features": [1.0, 1.0]}).status_code == 200
    with caplog.at_level(logging.ERROR):
        response = exploding_client.post(
            "/predict", json={"features": [9.0, 1.0]}, headers={"X-Request-ID": "req-42"}
        )
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["request_id"] == "req-42"
    assert body["type"] == "/problems/prediction-failed"
    text = response.get_data(as_text=True)
    assert "secret" not in text and "hunter2" not in text and "Traceback" not in text
    # the operator gets the whole story, tied to the same request id
    assert "req-42" in caplog.text and "Traceback" in caplog.text and "secret detail" in caplog.text


def test_unexpected_exception_is_500_problem(
    make_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(model_store=tmp_path)

    def broken() -> None:
        raise KeyError("internal key")

    app.add_url_rule("/broken", view_func=broken)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/broken")
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["request_id"] in body["detail"]
    assert "internal key" not in response.get_data(as_text=True)
    assert "KeyError" in caplog.text and body["request_id"] in caplog.text
