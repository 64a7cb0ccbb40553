"""Values outside the training data's range: served and flagged by default, refused on request.

The demo models' manifests hold the range of their training rows (with a margin);
their own datasets hold rows outside it (``breast_cancer`` row 190 has a
``compactness_error`` of 0.1354, above the 0.117 of its manifest).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.config import ConfigError, Settings
from service.models import demo
from tests.observed import read_audit, scrape

ROW_190 = 190


def dataset_rows(name: str) -> tuple[list[str], list[list[Any]]]:
    """A demo model's whole dataset, as its feature names and rows of plain values."""
    model = next(model for model in demo.DEMOS if model.name == name)
    frame, _, _ = model.load()
    return list(frame.columns), frame.to_numpy().tolist()


def cancer_row_190() -> dict[str, Any]:
    names, rows = dataset_rows("breast_cancer")
    return dict(zip(names, rows[ROW_190], strict=True))


@pytest.mark.parametrize("name", [model.name for model in demo.DEMOS])
def test_every_demo_model_scores_every_row_of_its_own_dataset(
    client: FlaskClient, demo_store_path: Path, name: str
) -> None:
    names, rows = dataset_rows(name)
    response = client.post(f"/v1/models/{name}/predict/batch", json=rows)
    assert response.status_code == 200, response.get_json()
    estimator = joblib.load(demo_store_path / name / "1" / "model.joblib")
    expected = estimator.predict(np.asarray(rows, dtype=float)).tolist()
    assert response.get_json()["predictions"] == expected
    text = ",".join(names) + "\n" + "".join(",".join(map(repr, row)) + "\n" for row in rows)
    answer = client.post(f"/v1/models/{name}/predict/csv", data=text.encode(), content_type="text/csv")
    records = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [record["error"] for record in records] == [""] * len(rows)


def test_a_value_outside_the_observed_range_is_served_with_a_warning(client: FlaskClient) -> None:
    row = cancer_row_190()
    response = client.post("/v1/models/breast_cancer/predict", json=row)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["prediction"] in ("malignant", "benign")
    assert list(body["warnings"]) == ["compactness_error"]
    assert body["warnings"]["compactness_error"] == [
        "Predicted although outside the training data's range (0 to 0.117)."
    ]
    # Several rows: the warnings are keyed by row index, like errors.
    inside = {**row, "compactness_error": 0.05}
    batch = client.post("/v1/models/breast_cancer/predict", json={"instances": [inside, row, inside]})
    assert batch.get_json()["warnings"] == {"1": body["warnings"]}
    # A row wholly inside has no warnings at all.
    assert "warnings" not in client.post("/v1/models/breast_cancer/predict", json=inside).get_json()


def test_the_csv_answer_has_the_warnings_in_their_own_column(client: FlaskClient) -> None:
    row = cancer_row_190()
    text = ",".join(row) + "\n" + ",".join(map(repr, row.values())) + "\n"
    answer = client.post("/v1/models/breast_cancer/predict/csv", data=text.encode(), content_type="text/csv")
    [record] = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert record["error"] == ""
    assert (
        record["warnings"]
        == "compactness_error: Predicted although outside the training data's range (0 to 0.117)."
    )


def test_the_reject_policy_refuses_values_outside_the_observed_range(
    make_app: Callable[..., Flask], demo_store_path: Path
) -> None:
    client = make_app(model_store=demo_store_path, range_policy="reject").test_client()
    response = client.post("/v1/models/breast_cancer/predict", json=cancer_row_190())
    assert response.status_code == 422
    assert response.get_json()["errors"] == {
        "compactness_error": ["Must be greater than or equal to 0.0 and less than or equal to 0.117."]
    }


def test_the_range_policy_is_read_from_the_environment() -> None:
    assert Settings.from_env({"SERVICE_RANGE_POLICY": " Reject "}).range_policy == "reject"
    assert Settings.from_env({}).range_policy == "flag"
    with pytest.raises(
        ConfigError, match="SERVICE_RANGE_POLICY='strict' is not valid: must be one of flag, reject"
    ):
        Settings.from_env({"SERVICE_RANGE_POLICY": "strict"})


def test_flagged_values_are_counted_by_model_and_feature_and_marked_in_the_audit_log(
    make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    app = make_app(model_store=demo_store_path, prediction_log=audit_path)
    client = app.test_client()
    row = cancer_row_190()
    inside = {**row, "compactness_error": 0.05}
    wide = {**row, "mean_radius": 1000.0}  # two features outside
    response = client.post(
        "/v1/models/breast_cancer/predict/batch",
        json=[inside, row, wide],
        headers={"X-Request-ID": "flagged"},
    )
    assert response.status_code == 200
    counted = scrape(client).by("flagged_values_total", "model", "feature")
    assert counted == {("breast_cancer", "compactness_error"): 2, ("breast_cancer", "mean_radius"): 1}
    app.extensions["service"].audit.close()
    lines = [line for line in read_audit(audit_path) if line["request_id"] == "flagged"]
    assert [line["row"] for line in lines] == [0, 1, 2]
    assert "warnings" not in lines[0]
    assert list(lines[1]["warnings"]) == ["compactness_error"]
    assert sorted(lines[2]["warnings"]) == ["compactness_error", "mean_radius"]


def test_declared_limits_refuse(make_app: Callable[..., Flask], store_path: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "iris.joblib"
    artifact.write_bytes((store_path / "iris" / "1" / "model.joblib").read_bytes())
    app = make_app(model_store=store_path)
    result = app.test_cli_runner().invoke(
        args=["models", "add", str(artifact), "--name", "limited", "--limit", "x3=0:3", "--limit", "x0=:20"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((store_path / "limited" / "1" / "model.json").read_text())
    limits = {feature["name"]: feature.get("limits") for feature in manifest["features"]}
    assert limits == {"x0": {"max": 20.0}, "x1": None, "x2": None, "x3": {"min": 0.0, "max": 3.0}}
    client = make_app(model_store=store_path).test_client()
    refused = client.post("/v1/models/limited/predict", json={"features": [5.1, 3.5, 1.4, 3.5]})
    assert refused.status_code == 422
    assert refused.get_json()["errors"] == {
        "x3": ["Must be greater than or equal to 0.0 and less than or equal to 3.0."]
    }
    assert (
        client.post("/v1/models/limited/predict", json={"features": [5.1, 3.5, 1.4, 2.9]}).status_code == 200
    )
    for bad in ("x3=3:0", "x3", "x3=a:b", "x3=0:inf"):
        result = app.test_cli_runner().invoke(
            args=["models", "add", str(artifact), "--name", "bad", "--limit", bad]
        )
        assert result.exit_code == 2 and "--limit" in result.output, (bad, result.output)
    unknown = app.test_cli_runner().invoke(
        args=["models", "add", str(artifact), "--name", "bad", "--limit", "x9=0:1"]
    )
    assert unknown.exit_code == 1 and "the model has no feature 'x9'" in unknown.output


def test_a_value_too_far_out_for_the_model_to_score_is_refused_not_a_server_error(
    client: FlaskClient,
) -> None:
    """The forest computes in float32: 1e300 is infinite to it. Values in range are still answered."""
    row = cancer_row_190()
    far = {**row, "mean_area": 1e300}
    single = client.post("/v1/models/breast_cancer/predict", json=far)
    assert single.status_code == 422, single.get_json()
    # Both values outside the training data are named: the model cannot say which it choked on.
    assert single.get_json()["errors"] == {
        "compactness_error": [
            "The model could not score this value, which lies outside its training data (0 to 0.117)."
        ],
        "mean_area": [
            "The model could not score this value, which lies outside its training data (0 to 2737)."
        ],
    }
    batch = client.post("/v1/models/breast_cancer/predict/batch", json=[row, far])
    assert batch.status_code == 422
    assert list(batch.get_json()["errors"]) == ["1"]
    text = ",".join(row) + "\n" + "".join(",".join(map(repr, r.values())) + "\n" for r in [row] * 3 + [far])
    answer = client.post("/v1/models/breast_cancer/predict/csv", data=text.encode(), content_type="text/csv")
    if answer.status_code == 200:  # scored row by row: the far row has its reason, the others their answer
        records = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
        assert [bool(record["prediction"]) for record in records] == [True, True, True, False]
        assert records[3]["error"].startswith("line 5: mean_area: The model could not score this value")
    else:
        assert answer.status_code == 422 and list(answer.get_json()["errors"]) == ["line 5"]


def test_a_file_with_a_value_the_model_cannot_score_is_refused_whole_with_on_error_fail(
    client: FlaskClient,
) -> None:
    row = cancer_row_190()
    far = {**row, "mean_area": 1e300}
    text = ",".join(row) + "\n" + "".join(",".join(map(repr, r.values())) + "\n" for r in [row, far, row])
    answer = client.post(
        "/v1/models/breast_cancer/predict/csv?on_error=fail", data=text.encode(), content_type="text/csv"
    )
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.get_json()["errors"] == {
        "line 3": {
            "compactness_error": [
                "The model could not score this value, which lies outside its training data (0 to 0.117)."
            ],
            "mean_area": [
                "The model could not score this value, which lies outside its training data (0 to 2737)."
            ],
        }
    }
