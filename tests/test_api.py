"""The HTTP API through Flask's test client: every route, request shape and error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.9, "sepal_width": 3.1, "petal_length": 5.4, "petal_width": 2.1}
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]
PROBLEM = "application/problem+json"


def as_list(row: dict[str, float]) -> list[float]:
    return [row[name] for name in ("sepal_length", "sepal_width", "petal_length", "petal_width")]


@pytest.fixture(scope="module")
def iris_model(demo_store_path: Path) -> Any:
    """The stored iris estimator, loaded in-process: the answers the API must match."""
    return joblib.load(demo_store_path / "iris" / "1" / "model.joblib")


def post(client: FlaskClient, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["type"].startswith("/problems/")
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


# --- Health and metadata -------------------------------------------------------


def test_health_is_ok_without_models(make_app: Any, tmp_path: Path) -> None:
    """Liveness does not depend on models: an empty store still answers 200."""
    response = make_app(model_store=tmp_path).test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_lists_every_model(client: FlaskClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert set(body["models"]) == {"iris", "diabetes", "breast_cancer"}
    assert all(model["ready"] for model in body["models"].values())


def test_ready_is_503_on_an_empty_store(make_app: Any, tmp_path: Path) -> None:
    body = assert_problem(make_app(model_store=tmp_path).test_client().get("/ready"), 503)
    assert "no models" in body["detail"]


def test_list_models(client: FlaskClient) -> None:
    body = client.get("/v1/models").get_json()
    assert body["default_model"] == "iris"
    by_name = {model["name"]: model for model in body["models"]}
    assert set(by_name) == {"iris", "diabetes", "breast_cancer"}
    assert by_name["diabetes"] == {
        "version": "1",
        "ready": True,
        "task": "regression",
        "name": "diabetes",
        "versions": ["1"],
    }


def test_model_metadata_shows_the_manifest(client: FlaskClient) -> None:
    body = client.get("/v1/models/iris").get_json()
    assert body["name"] == "iris" and body["version"] == "1" and body["ready"] is True
    assert body["task"] == "classification"
    assert body["classes"] == IRIS_CLASSES
    names = [feature["name"] for feature in body["features"]]
    assert names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    for feature in body["features"]:
        assert feature["type"] == "float"
        assert feature["min"] < feature["typical"] < feature["max"]
        assert feature["unit"] == "cm"
    assert 0.8 < body["metrics"]["accuracy"] <= 1.0
    assert body["trained_at"] and body["dataset"]["source"] == "sklearn.datasets.load_iris"
    assert body["trained_with"]["sklearn"] == body["serving_with"]["sklearn"]
    assert body["warnings"] == []
    assert len(body["artifact"]["sha256"]) == 64


def test_metadata_is_the_default_model(client: FlaskClient) -> None:
    assert client.get("/metadata").get_json() == client.get("/v1/models/iris").get_json()


def test_default_model_is_configurable(make_app: Any, demo_store_path: Path) -> None:
    client = make_app(model_store=demo_store_path, default_model="diabetes").test_client()
    assert client.get("/metadata").get_json()["name"] == "diabetes"
    answer = post(
        client, "/predict", {"instances": [[50, 1, 25.0, 90.0, 180.0, 110.0, 50.0, 4.0, 4.6, 90.0]]}
    )
    assert answer.get_json()["model"] == "diabetes"


def test_unknown_model_metadata_is_404(client: FlaskClient) -> None:
    body = assert_problem(client.get("/v1/models/nope"), 404)
    assert "nope" in body["detail"]


# --- Request shapes --------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        SETOSA,
        {"features": SETOSA},
        {"features": as_list(SETOSA)},
    ],
    ids=["flat-object", "features-object", "features-list"],
)
@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris/predict"])
def test_single_row_shapes(client: FlaskClient, iris_model: Any, path: str, body: Any) -> None:
    response = post(client, path, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    expected = iris_model.predict_proba(np.array([as_list(SETOSA)]))[0]
    assert answer["model"] == "iris" and answer["model_version"] == "1"
    assert answer["prediction"] == "setosa"
    assert list(answer["probabilities"]) == IRIS_CLASSES
    assert np.allclose(list(answer["probabilities"].values()), expected, rtol=0, atol=1e-12)


def test_instances_mix_named_and_list_rows_in_order(client: FlaskClient, iris_model: Any) -> None:
    rows = [SETOSA, as_list(VIRGINICA), as_list(SETOSA), VIRGINICA]
    answer = post(client, "/predict", {"instances": rows}).get_json()
    matrix = np.array([as_list(SETOSA), as_list(VIRGINICA), as_list(SETOSA), as_list(VIRGINICA)])
    assert answer["predictions"] == list(iris_model.predict(matrix))
    assert answer["predictions"] == ["setosa", "virginica", "setosa", "virginica"]
    assert len(answer["probabilities"]) == 4
    for got, expected in zip(answer["probabilities"], iris_model.predict_proba(matrix), strict=True):
        assert np.allclose(list(got.values()), expected, rtol=0, atol=1e-12)
        assert sum(got.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("path", ["/predict/batch", "/v1/models/iris/predict/batch"])
def test_batch_routes_take_a_bare_list(client: FlaskClient, path: str) -> None:
    answer = post(client, path, [SETOSA, as_list(VIRGINICA)]).get_json()
    assert answer["predictions"] == ["setosa", "virginica"]


def test_batch_routes_take_instances_and_always_answer_a_list(client: FlaskClient) -> None:
    assert post(client, "/predict/batch", {"instances": [SETOSA]}).get_json()["predictions"] == ["setosa"]
    assert post(client, "/predict/batch", SETOSA).get_json()["predictions"] == ["setosa"]


def test_a_batch_is_one_vectorised_model_call(app: Flask) -> None:
    """N rows reach the estimator as whole N-row matrices, never row by row."""
    model = app.extensions["service"].registry.get("breast_cancer")
    rows_seen: list[int] = []

    def counting(method: Any) -> Any:
        def wrapper(matrix: Any) -> Any:
            rows_seen.append(len(matrix))
            return method(matrix)

        return wrapper

    model.estimator.predict = counting(model.estimator.predict)
    model.estimator.predict_proba = counting(model.estimator.predict_proba)
    try:
        row = model.manifest.example_row()
        answer = post(app.test_client(), "/v1/models/breast_cancer/predict/batch", [row] * 50)
    finally:
        del model.estimator.predict, model.estimator.predict_proba
    assert answer.status_code == 200
    assert len(answer.get_json()["predictions"]) == 50
    assert rows_seen and set(rows_seen) == {50}
    assert len(rows_seen) <= 3  # predict, predict_proba (and predict's own call to it)


def test_regressor_returns_a_number(client: FlaskClient, demo_store_path: Path) -> None:
    row = [50, 1, 25.0, 90.0, 180.0, 110.0, 50.0, 4.0, 4.6, 90.0]
    answer = post(client, "/v1/models/diabetes/predict", {"features": row}).get_json()
    model = joblib.load(demo_store_path / "diabetes" / "1" / "model.joblib")
    assert answer["model"] == "diabetes"
    assert answer["prediction"] == pytest.approx(float(model.predict(np.array([row]))[0]), abs=1e-9)
    assert "probabilities" not in answer


def test_integral_floats_are_accepted_for_int_features(client: FlaskClient) -> None:
    row = [50.0, 1.0, 25.0, 90.0, 180.0, 110.0, 50.0, 4.0, 4.6, 90.0]
    assert post(client, "/v1/models/diabetes/predict", {"features": row}).status_code == 200


def test_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    sent = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert sent.headers["X-Request-ID"] == "abc-123"
    for bad in ("has spaces", "x" * 129, 'quote"s'):
        replaced = client.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert replaced != bad and len(replaced) == 32


# --- Bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"features": [5.1, 3.5', "not valid JSON"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b"\xff\xfe{]", "not valid"),
        (b'{"sepal_length": 5.1, "sepal_length": 5.2}', "repeats the key 'sepal_length'"),
        (b'{"features": {"petal_width": 1, "petal_width": 2}}', "repeats the key 'petal_width'"),
        (b'{"instances": [{"a": 1}, {"b": 2, "b": 3}]}', "repeats the key 'b'"),
        (b'[{"a": {"deep": 1, "deep": 2}}]', "repeats the key 'deep'"),
        (b'{"features": [1, 2, 3, 4], "features": [5, 6, 7, 8]}', "repeats the key 'features'"),
        (b"[" * 10 + b"]" * 9, "not valid JSON"),
    ],
    ids=[
        "truncated",
        "empty",
        "blank",
        "not-utf8",
        "duplicate-key",
        "duplicate-in-features",
        "duplicate-in-a-row",
        "duplicate-deeper",
        "duplicate-envelope",
        "unbalanced",
    ],
)
def test_malformed_bodies_are_400(client: FlaskClient, data: bytes, fragment: str) -> None:
    response = client.post("/predict/batch", data=data, content_type="application/json")
    body = assert_problem(response, 400)
    assert fragment in body["detail"]


def test_a_colon_inside_a_string_is_not_taken_for_a_key(client: FlaskClient) -> None:
    """Keys are counted by colons to catch repeated ones; a colon in a value must not confuse it."""
    body = (
        b'{"features": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": "1:4", "petal_width": 0.2}}'
    )
    response = client.post("/predict", data=body, content_type="application/json")
    problem = assert_problem(response, 422)
    assert problem["errors"] == {"petal_length": ["Not a valid number."]}
    fine = b'{"features": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}'
    assert client.post("/predict", data=fine, content_type="application/json").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ],
    ids=["text", "form", "none", "gzip"],
)
def test_non_json_is_415(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post("/predict", data=json.dumps(SETOSA), headers=headers)
    assert_problem(response, 415)


def test_json_with_charset_and_vendor_types_is_json(client: FlaskClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = client.post("/predict", data=json.dumps(SETOSA), content_type=content_type)
        assert response.status_code == 200


def test_body_over_the_limit_is_413(make_app: Any, demo_store_path: Path) -> None:
    client = make_app(model_store=demo_store_path, max_body_bytes=300).test_client()
    small = post(client, "/predict", SETOSA)
    assert small.status_code == 200
    big = post(client, "/predict/batch", [SETOSA] * 10)
    body = assert_problem(big, 413)
    assert "300 bytes" in body["detail"]


def test_too_many_rows_is_413(make_app: Any, demo_store_path: Path) -> None:
    client = make_app(model_store=demo_store_path, max_batch_rows=3).test_client()
    assert post(client, "/predict/batch", [SETOSA] * 3).status_code == 200
    body = assert_problem(post(client, "/predict/batch", [SETOSA] * 4), 413)
    assert "4 rows" in body["detail"] and "at most 3" in body["detail"]
    assert_problem(post(client, "/predict", {"instances": [SETOSA] * 4}), 413)


@pytest.mark.parametrize(
    ("token", "field"),
    [
        ("NaN", "sepal_length"),
        ("Infinity", "sepal_width"),
        ("-Infinity", "petal_width"),
        ("1e999", "petal_length"),
    ],
)
def test_nan_and_infinity_are_422_naming_the_field(client: FlaskClient, token: str, field: str) -> None:
    row = {name: str(value) for name, value in SETOSA.items()}
    row[field] = token
    data = "{" + ", ".join(f'"{name}": {value}' for name, value in row.items()) + "}"
    body = assert_problem(client.post("/predict", data=data, content_type="application/json"), 422)
    assert list(body["errors"]) == [field]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"sepal_length": "5.1"}, "sepal_length", "Not a valid number."),
        ({"sepal_length": True}, "sepal_length", "Not a valid number."),
        ({"sepal_length": None}, "sepal_length", "Field may not be null."),
        ({"sepal_length": [5.1]}, "sepal_length", "Not a valid number."),
        ({"sepal_colour": 1.0}, "sepal_colour", "Unknown field."),
    ],
)
def test_invalid_values_are_422_naming_the_field(
    client: FlaskClient, change: dict[str, Any], field: str, message: str
) -> None:
    body = assert_problem(post(client, "/predict", {**SETOSA, **change}), 422)
    assert list(body["errors"]) == [field]
    assert message in body["errors"][field][0]


def test_missing_features_are_named(client: FlaskClient) -> None:
    row = dict(SETOSA)
    del row["petal_width"]
    body = assert_problem(post(client, "/predict", {"features": row}), 422)
    assert body["errors"] == {"petal_width": ["Missing data for required field."]}


def test_int_features_reject_fractions(client: FlaskClient) -> None:
    row = [50.5, 1, 25.0, 90.0, 180.0, 110.0, 50.0, 4.0, 4.6, 90.0]
    body = assert_problem(post(client, "/v1/models/diabetes/predict", {"features": row}), 422)
    assert body["errors"] == {"age": ["Not a valid integer."]}


def test_list_rows_must_have_every_feature(client: FlaskClient) -> None:
    body = assert_problem(post(client, "/predict", {"features": [5.1, 3.5, 1.4]}), 422)
    assert "Expected 4 values" in body["errors"]["_row"][0]


def test_batch_errors_name_row_and_field(client: FlaskClient) -> None:
    rows = [SETOSA, {**SETOSA, "petal_length": "long"}, [1, 2], "not a row", as_list(VIRGINICA)]
    body = assert_problem(post(client, "/predict/batch", rows), 422)
    assert set(body["errors"]) == {"1", "2", "3"}
    assert body["errors"]["1"] == {"petal_length": ["Not a valid number."]}
    assert "Expected 4 values" in body["errors"]["2"]["_row"][0]
    assert "_row" in body["errors"]["3"]
    assert "3 of 5 rows" in body["detail"]


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/predict", [SETOSA], "_body"),
        ("/predict", 5, "_body"),
        ("/predict", "setosa", "_body"),
        ("/predict", {"instances": []}, "instances"),
        ("/predict", {"instances": SETOSA}, "instances"),
        ("/predict", {"instances": [SETOSA], "extra": 1}, "extra"),
        ("/predict", {"features": 5}, "features"),
        ("/predict", {"features": SETOSA, "id": 7}, "id"),
        ("/predict/batch", [], "_body"),
    ],
)
def test_bad_envelopes_are_422(client: FlaskClient, path: str, body: Any, key: str) -> None:
    problem = assert_problem(post(client, path, body), 422)
    assert key in problem["errors"], problem


def test_unknown_model_is_404(client: FlaskClient) -> None:
    body = assert_problem(post(client, "/v1/models/nope/predict", SETOSA), 404)
    assert "'nope'" in body["detail"]
    assert_problem(post(client, "/v1/models/nope/predict/batch", [SETOSA]), 404)


@pytest.mark.parametrize("path", ["/nope", "/predict/", "/v1/models/iris/predict/more", "/v1"])
def test_unknown_routes_are_404(client: FlaskClient, path: str) -> None:
    assert_problem(client.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/predict", "OPTIONS, POST"),
        ("PUT", "/v1/models/iris", "GET, HEAD, OPTIONS"),
        ("DELETE", "/v1/models/iris/predict", "OPTIONS, POST"),
        ("POST", "/health", "GET, HEAD, OPTIONS"),
        ("PATCH", "/ready", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_is_405_with_allow(client: FlaskClient, method: str, path: str, allowed: str) -> None:
    response = client.open(path, method=method)
    assert_problem(response, 405)
    assert response.headers["Allow"] == allowed


def test_other_http_errors_keep_werkzeugs_name(client: FlaskClient) -> None:
    """An HTTP error the problem table does not name is answered as itself, never as a server fault."""
    response = client.get("/static/pages.css", headers={"Range": "bytes=99999999-"})
    body = assert_problem(response, 416)
    assert (body["type"], body["title"]) == (
        "/problems/requested-range-not-satisfiable",
        "Requested Range Not Satisfiable",
    )


@pytest.mark.parametrize(
    "path", ["//predict", "/v1/models//predict", "/v1/models/iris//predict", "/./predict"]
)
def test_odd_paths_are_json_404_not_redirects(client: FlaskClient, path: str) -> None:
    assert_problem(post(client, path, SETOSA), 404)


def test_options_lists_methods_without_a_body(client: FlaskClient) -> None:
    response = client.options("/v1/models/iris/predict")
    assert response.status_code == 204
    assert response.headers["Allow"] == "OPTIONS, POST"
    assert response.data == b""
