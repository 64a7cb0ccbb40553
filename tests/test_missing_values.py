"""Missing values in real data: pipelines built to score them are served exactly as in-process.

Two public datasets that ship inside their packages (nothing downloads): the
Palmer penguins (numbers and a category with missing values) and the Vega cars
(horsepower missing for some cars). Each model is added with the CLI, as a user
adds theirs, then asked over JSON and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.app import create_app
from service.config import Settings
from tests.datasets import (
    PENGUIN_CATEGORIES,
    PENGUIN_NUMBERS,
    PENGUINS_CSV,
    add_penguins,
    add_with_cli,
    cars,
    penguins,
)

CAR_FEATURES = ["Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with both models, added with the CLI from their files and samples."""
    root = tmp_path_factory.mktemp("missing_store")
    work = tmp_path_factory.mktemp("missing_files")
    app = create_app(Settings(model_store=root))
    pipeline = add_penguins(app, work)
    car_frame = cars().dropna(subset=["Miles_per_Gallon"])
    regressor = HistGradientBoostingRegressor(random_state=0).fit(
        car_frame[CAR_FEATURES], car_frame["Miles_per_Gallon"]
    )
    joblib.dump(regressor, work / "cars.joblib")
    car_frame.to_csv(work / "cars.csv", index=False)
    add_with_cli(app, str(work / "cars.joblib"), "--name", "cars", "--sample", str(work / "cars.csv"),
        "--target", "Miles_per_Gallon")  # fmt: skip
    return {"root": root, "penguins": pipeline, "cars": regressor, "car_frame": car_frame}


@pytest.fixture(scope="module")
def client(store: dict[str, Any]) -> FlaskClient:
    app = create_app(Settings(model_store=store["root"]))
    app.config["TESTING"] = True
    return app.test_client()


def csv_records(client: FlaskClient, path: str, text: str) -> list[dict[str, str]]:
    response = client.post(path, data=text.encode(), content_type="text/csv")
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def manifest_features(root: Path, name: str) -> dict[str, dict[str, Any]]:
    document = json.loads((root / name / "1" / "model.json").read_text())
    return {feature["name"]: feature for feature in document["features"]}


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: a missing value as null in even rows, left out in odd ones."""
    rows = []
    for index, record in enumerate(frame.to_dict(orient="records")):
        row = {
            key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in record.items()
        }
        rows.append(
            row if index % 2 == 0 else {key: value for key, value in row.items() if value is not None}
        )
    return rows


def test_the_cli_marks_nullable_features_from_the_sample_and_the_estimator(store: dict[str, Any]) -> None:
    features = manifest_features(store["root"], "penguins")
    assert {name for name, feature in features.items() if feature.get("nullable")} == {
        *PENGUIN_NUMBERS,
        "sex",
    }
    # The encoder learned the missing sex as a category and ignores unknown ones.
    assert features["sex"]["categories"] == ["female", "male"] and features["sex"]["accepts_unknown"] is True
    assert "nullable" not in features["island"]
    car_features = manifest_features(store["root"], "cars")
    # The gradient boosting model handles missing values itself: every feature may be missing.
    assert all(feature.get("nullable") for feature in car_features.values())


def test_penguin_rows_with_missing_values_are_answered_as_in_process(
    client: FlaskClient, store: dict[str, Any]
) -> None:
    frame = penguins()
    features = frame[PENGUIN_NUMBERS + PENGUIN_CATEGORIES]
    assert features.isna().any(axis=1).sum() == 11  # the rows this is about
    response = client.post("/v1/models/penguins/predict", json={"instances": json_rows(features)})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    expected = store["penguins"].predict_proba(features)
    classes = list(store["penguins"].classes_)
    assert body["predictions"] == list(store["penguins"].predict(features))
    assert [[row[label] for label in classes] for row in body["probabilities"]] == expected.tolist()


def test_penguin_csv_with_empty_cells_is_answered_as_in_process(
    client: FlaskClient, store: dict[str, Any]
) -> None:
    text = PENGUINS_CSV.read_text()
    response = client.post("/v1/models/penguins/predict/csv", data=text.encode(), content_type="text/csv")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    frame = penguins()
    expected = store["penguins"].predict_proba(frame[PENGUIN_NUMBERS + PENGUIN_CATEGORIES])
    assert [record["error"] for record in answer] == [""] * len(frame)
    assert [record["prediction"] for record in answer] == list(
        store["penguins"].predict(frame[PENGUIN_NUMBERS + PENGUIN_CATEGORIES])
    )
    for label_index, label in enumerate(store["penguins"].classes_):
        assert [float(record[f"probability_{label}"]) for record in answer] == expected[
            :, label_index
        ].tolist()


def test_car_rows_with_missing_horsepower_are_answered_as_in_process(
    client: FlaskClient, store: dict[str, Any]
) -> None:
    frame = cars()[CAR_FEATURES]
    assert frame["Horsepower"].isna().sum() == 6
    expected = store["cars"].predict(frame).tolist()
    response = client.post("/v1/models/cars/predict/batch", json=json_rows(frame))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["predictions"] == expected
    text = frame.to_csv(index=False)
    answer = csv_records(client, "/v1/models/cars/predict/csv", text)
    assert [float(record["prediction"]) for record in answer] == expected


def test_a_missing_value_of_a_feature_that_is_not_nullable_is_still_refused(client: FlaskClient) -> None:
    row = {"bill_length_mm": 39.1, "bill_depth_mm": None, "flipper_length_mm": 181, "body_mass_g": 3750,
           "island": None, "sex": None}  # fmt: skip
    response = client.post("/v1/models/penguins/predict", json=row)
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"island": ["Field may not be null."]}
    del row["island"]
    response = client.post("/v1/models/penguins/predict", json={"features": row})
    assert response.get_json()["errors"] == {"island": ["Missing data for required field."]}
    text = "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex\n,39.1,,181,3750,\n"
    response = client.post("/v1/models/penguins/predict/csv", data=text.encode(), content_type="text/csv")
    if response.status_code == 422:  # refused whole, or answered row by row with the reason
        assert response.get_json()["errors"] == {"line 2": {"island": ["Missing value: the cell is empty."]}}
    else:
        [record] = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert (
            record["prediction"] == ""
            and record["error"] == "line 2: island: Missing value: the cell is empty."
        )


def test_an_unseen_category_is_served_and_flagged_when_the_encoder_takes_it(
    client: FlaskClient, store: dict[str, Any]
) -> None:
    row = {"bill_length_mm": 39.1, "bill_depth_mm": 18.7, "flipper_length_mm": 181, "body_mass_g": 3750,
           "island": "Torgersen", "sex": "unknown"}  # fmt: skip
    response = client.post("/v1/models/penguins/predict", json=row)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (
        list(body["warnings"]) == ["sex"] and "not a category seen in training" in body["warnings"]["sex"][0]
    )
    assert body["prediction"] == store["penguins"].predict(pd.DataFrame([row]))[0]
    # A category that is not text at all is still refused.
    refused = client.post("/v1/models/penguins/predict", json={**row, "island": 7})
    assert refused.status_code == 422 and list(refused.get_json()["errors"]) == ["island"]


def test_nullable_features_are_nullable_in_the_metadata_and_the_openapi_document(client: FlaskClient) -> None:
    metadata = client.get("/v1/models/cars").get_json()
    assert all(feature["nullable"] for feature in metadata["features"])
    document = client.get("/openapi.json").get_json()
    row = document["components"]["schemas"]["penguins.Row"]
    assert set(row["required"]) == {"island"}
    for name in PENGUIN_NUMBERS:
        assert "null" in row["properties"][name]["type"], row["properties"][name]
    assert "null" not in np.atleast_1d(row["properties"]["island"].get("type", [])).tolist()


def test_the_page_offers_an_empty_choice_for_nullable_features(client: FlaskClient) -> None:
    page = client.get("/models/penguins", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert page.count('data-nullable="true"') == len(PENGUIN_NUMBERS) + 1  # the numbers and sex
    sex = page[page.index('name="sex"') :]
    assert sex[: sex.index("</select>")].count('<option value="">(missing)</option>') == 1
    island = page[page.index('name="island"') :]
    assert "(missing)" not in island[: island.index("</select>")]


def test_without_a_sample_the_estimator_says_which_features_take_missing_values(
    store: dict[str, Any], tmp_path: Path
) -> None:
    app = create_app(Settings(model_store=tmp_path / "store"))
    joblib.dump(store["penguins"], tmp_path / "penguins.joblib")
    add_with_cli(app, str(tmp_path / "penguins.joblib"), "--name", "penguins")
    features = manifest_features(tmp_path / "store", "penguins")
    # The imputer covers the numbers; the encoder learned sex's missing value as a category.
    assert {name for name, feature in features.items() if feature.get("nullable")} == {
        *PENGUIN_NUMBERS,
        "sex",
    }
    add_with_cli(app, str(tmp_path / "penguins.joblib"), "--name", "penguins", "--nullable", "island",
                 "--not-nullable", "sex", "--not-nullable", "body_mass_g")  # fmt: skip
    features = json.loads((tmp_path / "store" / "penguins" / "2" / "model.json").read_text())["features"]
    assert {feature["name"] for feature in features if feature.get("nullable")} == {
        *PENGUIN_NUMBERS[:3],
        "island",
    }
    result = app.test_cli_runner().invoke(
        args=["models", "add", str(tmp_path / "penguins.joblib"), "--name", "penguins", "--nullable", "beak"]
    )
    assert result.exit_code == 1 and "the model has no feature 'beak'" in result.output


def test_an_encoder_that_learned_none_as_a_category_is_given_none(tmp_path: Path) -> None:
    """Fitted on a numpy object array, a one-hot encoder learns a missing string as None (not NaN)."""
    rng = np.random.default_rng(4)
    colours = rng.choice(np.array(["red", "blue", None], dtype=object), 120)
    sizes = rng.uniform(0, 10, 120)
    rows = np.column_stack([colours, sizes]).astype(object)
    labels = np.where((colours == "red") | (sizes > 7), "big", "small")
    model = make_pipeline(
        ColumnTransformer([("colour", OneHotEncoder(), [0])], remainder="passthrough"), LogisticRegression()
    ).fit(rows, labels)
    joblib.dump(model, tmp_path / "model.joblib")
    pd.DataFrame({"colour": colours, "size": sizes}).to_csv(tmp_path / "sample.csv", index=False)
    app = create_app(Settings(model_store=tmp_path / "store"))
    add_with_cli(
        app, str(tmp_path / "model.joblib"), "--name", "sizes", "--sample", str(tmp_path / "sample.csv")
    )
    colour = manifest_features(tmp_path / "store", "sizes")["colour"]
    assert (colour["nullable"], colour["missing_value"]) == (True, "none")
    client = create_app(Settings(model_store=tmp_path / "store")).test_client()
    expected = model.predict_proba(np.array([[None, 8.0], [None, 2.0]], dtype=object)).tolist()
    answer = client.post(
        "/v1/models/sizes/predict", json={"instances": [{"colour": None, "size": 8.0}, {"size": 2.0}]}
    )
    assert answer.status_code == 200, answer.get_json()
    assert [
        [row[label] for label in model.classes_] for row in answer.get_json()["probabilities"]
    ] == expected
    text = "colour,size\n,8.0\nNA,2.0\n"
    records = csv_records(client, "/v1/models/sizes/predict/csv", text)
    assert [
        [float(record[f"probability_{label}"]) for label in model.classes_] for record in records
    ] == expected
