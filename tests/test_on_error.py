"""``on_error``: what an invalid row does to a request of several rows (service/api/query.py).

The JSON batch routes refuse the whole batch by default and answer row by row with
``on_error=row``; the CSV route answers row by row by default and refuses the whole
file with ``on_error=fail``. Through Flask's test client.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sklearn import datasets

from tests.helpers import SETOSA

PROBLEM = "application/problem+json"
IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CSV_TEXT = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n"
BATCH_ROUTES = ("/v1/models/iris/predict/batch", "/predict/batch")


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    return response.get_json()


def post_batch(client: FlaskClient, rows: list[Any], query: str = "?on_error=row", name: str = "iris") -> Any:
    return client.post(f"/v1/models/{name}/predict/batch{query}", json={"instances": rows})


@pytest.fixture(scope="module")
def iris_rows() -> list[dict[str, float]]:
    """The 150 iris rows as JSON rows."""
    frame = datasets.load_iris(as_frame=True).data.set_axis(list(IRIS), axis=1)
    return frame.to_dict(orient="records")


def in_process(app: Flask, name: str, rows: list[dict[str, Any]]) -> tuple[list[Any], np.ndarray | None]:
    """(labels or values, probabilities) straight from the stored estimator."""
    model = app.extensions["service"].registry.get(name)
    matrix = np.array(
        [[row[feature] for feature in model.manifest.feature_names] for row in rows], dtype=float
    )
    labels = model.estimator.predict(matrix).tolist()
    probabilities = (
        model.estimator.predict_proba(matrix) if hasattr(model.estimator, "predict_proba") else None
    )
    return labels, probabilities


# --- The parameter ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [*BATCH_ROUTES, "/v1/models/iris/predict/csv"])
@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("?on_error=skip", {"on_error": ["Must be one of: row, fail."]}),
        ("?on_error=", {"on_error": ["Must be one of: row, fail."]}),
        ("?on_eror=row", {"on_eror": ["Unknown field."]}),
        ("?on_error=row&on_error=fail", {"on_error": ["Give this parameter once."]}),
    ],
)
def test_a_bad_query_string_is_a_422_naming_the_parameter(
    client: FlaskClient, path: str, query: str, errors: dict[str, list[str]]
) -> None:
    if path.endswith("/csv"):
        response = client.post(path + query, data=CSV_TEXT.encode(), content_type="text/csv")
    else:
        response = client.post(path + query, json={"instances": [SETOSA]})
    body = problem(response, 422)
    assert body["type"] == "/problems/invalid-input" and body["errors"] == errors


@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris/predict"])
def test_single_row_routes_take_no_on_error(client: FlaskClient, path: str) -> None:
    """A single row is answered or refused: there is nothing to set aside. The parameter is not read."""
    response = client.post(path + "?on_error=row", json={**SETOSA, "petal_length": "long"})
    assert problem(response, 422)["errors"] == {"petal_length": ["Not a valid number."]}


def test_the_parameter_is_documented_on_each_route(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for path, default in [
        ("/v1/models/iris/predict/batch", "fail"),
        ("/predict/batch", "fail"),
        ("/v1/models/{name}/predict/csv", "row"),
    ]:
        [parameter] = [item for item in paths[path]["post"]["parameters"] if item.get("name") == "on_error"]
        assert parameter["name"] == "on_error" and parameter["required"] is False
        assert parameter["schema"] == {"type": "string", "default": default, "enum": ["row", "fail"]}
        assert parameter["description"]
    assert "parameters" not in paths["/v1/models/iris/predict"]["post"]


# --- JSON batches row by row -------------------------------------------------------------


def test_by_default_one_bad_row_refuses_the_batch(
    client: FlaskClient, iris_rows: list[dict[str, float]]
) -> None:
    rows = [iris_rows[0], {**iris_rows[1], "petal_width": "wide"}]
    for query in ("", "?on_error=fail"):
        body = problem(post_batch(client, rows, query), 422)
        assert body["errors"] == {"1": {"petal_width": ["Not a valid number."]}}


def test_on_error_row_predicts_the_good_rows_and_names_the_bad(
    app: Flask, client: FlaskClient, iris_rows: list[dict[str, float]]
) -> None:
    rows: list[Any] = list(iris_rows)
    bad = {
        3: {**iris_rows[3], "petal_width": "wide"},
        40: {**iris_rows[40], "sepal_length": None, "colour": "red"},
        77: [1.0, 2.0],
        149: "not a row",
    }
    for index, row in bad.items():
        rows[index] = row
    response = post_batch(client, rows)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    good = [index for index in range(len(rows)) if index not in bad]
    labels, probabilities = in_process(app, "iris", [iris_rows[index] for index in good])
    assert [answer["predictions"][index] for index in good] == labels
    assert [answer["probabilities"][index] for index in good] == [
        dict(zip(("setosa", "versicolor", "virginica"), row, strict=True)) for row in probabilities.tolist()
    ]
    assert [index for index, label in enumerate(answer["predictions"]) if label is None] == list(bad)
    assert [index for index, p in enumerate(answer["probabilities"]) if p is None] == list(bad)
    assert answer["errors"] == {
        "3": {"petal_width": ["Not a valid number."]},
        "40": {
            "sepal_length": ["Field may not be null."],
            "colour": ["Unknown field."],
        },
        "77": {"_row": ["Expected 4 values in manifest order (sepal_length, sepal_width, petal_length, "
                        "petal_width), got 2."]},
        "149": {"_row": ["A row must be an object of named features or a list of values in manifest order."]},
    }  # fmt: skip
    assert "errors_omitted" not in answer


def test_on_error_row_with_every_row_good_or_every_row_bad(
    app: Flask, client: FlaskClient, iris_rows: list[dict[str, float]]
) -> None:
    good = post_batch(client, iris_rows[:5]).get_json()
    assert "errors" not in good
    assert good["predictions"] == in_process(app, "iris", iris_rows[:5])[0]
    response = post_batch(client, [{"petal_width": 1}, [1, 2, 3, 4, 5]])
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["predictions"] == [None, None] and answer["probabilities"] == [None, None]
    assert list(answer["errors"]) == ["0", "1"]


def test_on_error_row_for_a_regressor(app: Flask, client: FlaskClient) -> None:
    frame = datasets.load_diabetes(as_frame=True, scaled=False).data.astype({"age": "int64", "sex": "int64"})
    rows: list[Any] = frame.head(20).to_dict(orient="records")
    rows[7] = {**rows[7], "bmi": None}
    answer = post_batch(client, rows, name="diabetes").get_json()
    values, _ = in_process(app, "diabetes", [row for index, row in enumerate(rows) if index != 7])
    assert answer["predictions"][:7] + answer["predictions"][8:] == values
    assert answer["predictions"][7] is None and "probabilities" not in answer
    assert answer["errors"] == {"7": {"bmi": ["Field may not be null."]}}


def test_on_error_row_lists_at_most_a_hundred_bad_fields(client: FlaskClient) -> None:
    rows = [dict.fromkeys(IRIS, "x") for _ in range(30)]  # 120 bad fields
    answer = post_batch(client, rows).get_json()
    assert answer["predictions"] == [None] * 30
    assert list(answer["errors"]) == [str(index) for index in range(25)]  # 25 rows x 4 fields
    assert answer["errors_omitted"] == 20


def test_on_error_row_on_the_default_models_route(app: Flask, client: FlaskClient) -> None:
    response = client.post("/predict/batch?on_error=row", json=[SETOSA, {**SETOSA, "sepal_width": "narrow"}])
    answer = response.get_json()
    assert answer["predictions"] == [in_process(app, "iris", [SETOSA])[0][0], None]
    assert list(answer["errors"]) == ["1"]
