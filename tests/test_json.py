"""Answers are rendered with orjson (service/api/json_provider.py): exact, valid JSON."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.json_provider import OrjsonProvider
from tests.helpers import random_rows
from tests.rows import JsonValidator


def rows_for(app: Flask, name: str, seed: int, count: int) -> list[dict]:
    model = app.extensions["service"].registry.get(name)
    return random_rows(model.manifest.features, random.Random(seed), count)


def strict_json(data: bytes) -> object:
    """Parse as RFC 8259 JSON: UTF-8, no NaN or Infinity."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(data.decode("utf-8"), parse_constant=refuse)


def test_the_app_renders_with_orjson(app: Flask) -> None:
    assert isinstance(app.json, OrjsonProvider)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_numpy_arrays_are_written_exactly(app: Flask, values: list[float]) -> None:
    """Every float64 survives the round trip bit for bit, array or scalar."""
    array = np.array(values, dtype=np.float64)
    document = strict_json(app.json.dumps_bytes({"array": array, "scalar": array[0], "ints": np.arange(3)}))
    assert document == {"array": values, "scalar": values[0], "ints": [0, 1, 2]}
    assert [math.copysign(1, v) for v in document["array"]] == [math.copysign(1, v) for v in values]


def test_what_orjson_cannot_write_is_still_written(app: Flask) -> None:
    document = {"big": 10**30, "key": "\ud800", "text": "café ✓"}
    assert strict_json(app.json.dumps_bytes(document)) == document


def test_regression_answers_carry_the_models_exact_values(client: FlaskClient, app: Flask) -> None:
    """The regressor's float64 values reach the client unchanged, single and batch."""
    model = app.extensions["service"].registry.get("diabetes")
    rows = rows_for(app, "diabetes", 3, 20)
    expected = model.predict(JsonValidator(model.manifest).validate_many(rows)).values.tolist()
    response = client.post("/v1/models/diabetes/predict/batch", json={"instances": rows})
    assert response.status_code == 200 and response.content_type == "application/json"
    assert response.data.endswith(b"}\n")
    assert strict_json(response.data)["predictions"] == expected
    single = client.post("/v1/models/diabetes/predict", json={"features": rows[0]})
    assert strict_json(single.data)["prediction"] == expected[0]


@pytest.mark.parametrize("name", ["iris", "breast_cancer"])
def test_classifier_answers_are_strict_json(client: FlaskClient, app: Flask, name: str) -> None:
    rows = rows_for(app, name, 5, 30)
    response = client.post(f"/v1/models/{name}/predict/batch", json=rows)
    document = strict_json(response.data)
    model = app.extensions["service"].registry.get(name)
    prediction = model.predict(JsonValidator(model.manifest).validate_many(rows))
    assert document["predictions"] == prediction.values.tolist()
    keys = list(document["probabilities"][0])
    assert np.array_equal(
        np.array([[row[key] for key in keys] for row in document["probabilities"]]), prediction.probabilities
    )
