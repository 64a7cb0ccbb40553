"""Every estimator shape, added with ``models add`` and answered exactly as in-process.

Multi-output regressors and classifiers, classifiers with integer, boolean and
string labels with and without ``predict_proba``, outlier detectors and
clusterers (tests/shapes.py), through Flask's test client: the manifest, JSON
answers (one row and many), CSV answers, the OpenAPI schemas, the audit log,
the metrics and the model's page. Then what ``models add`` refuses, and why.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sklearn import datasets
from sklearn.cluster import DBSCAN, AgglomerativeClustering
from sklearn.linear_model import LinearRegression
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.tree import DecisionTreeClassifier

from service.api.answers import compact_schema, prediction_schemas
from service.app import create_app
from service.config import Settings
from service.state import state
from tests.observed import read_audit, scrape
from tests.servers import run_in_repo
from tests.shapes import every_shape, label_text

FLASK = Path(sys.executable).parent / "flask"
SHAPES = {shape.name: shape for shape in every_shape()}
SINGLE_ROWS = 3  # rows also sent one at a time


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["models", *args])


def build_app(store: Path, **settings: Any) -> Flask:
    app = create_app(Settings(model_store=store, **settings))
    app.config["TESTING"] = True
    return app


@pytest.fixture(scope="module")
def shapes_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding every shape, each added with ``models add`` (and its sample, as a user would)."""
    root = tmp_path_factory.mktemp("shapes_store")
    files = tmp_path_factory.mktemp("shape_files")
    adder = build_app(root)
    for shape in SHAPES.values():
        result = invoke(adder, "add", *shape.add_options(files))
        assert result.exit_code == 0, (shape.name, result.output)
        assert f"added {shape.name} version 1 ({shape.task}" in result.output
    return root


@pytest.fixture(scope="module")
def shapes_app(shapes_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return build_app(shapes_store, prediction_log=tmp_path_factory.mktemp("audit") / "audit.jsonl")


@pytest.fixture
def client(shapes_app: Flask) -> FlaskClient:
    return shapes_app.test_client()


def same(answer: Any, expected: Any, where: str = "") -> None:
    """Equal, and of the same JSON type all the way down (1 is not 1.0 nor true)."""
    assert type(answer) is type(expected), (where, answer, expected)
    if isinstance(expected, dict):
        assert list(answer) == list(expected), where
        for key in expected:
            same(answer[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(answer) == len(expected), where
        for index, (got, wanted) in enumerate(zip(answer, expected, strict=True)):
            same(got, wanted, f"{where}[{index}]")
    else:
        assert answer == expected, (where, answer, expected)


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


# --- The manifest -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SHAPES)
def test_the_manifest_says_the_task_and_names_the_targets(client: FlaskClient, name: str) -> None:
    shape = SHAPES[name]
    manifest = ok(client.get(f"/v1/models/{name}"))
    assert manifest["ready"] is True
    assert manifest["task"] == shape.task
    assert [feature["name"] for feature in manifest["features"]] == shape.features
    if shape.target_names:
        assert manifest["targets"] == shape.target_names
    else:
        assert "targets" not in manifest
    classes = getattr(shape.estimator, "classes_", None)
    if shape.task != "classification":
        assert "classes" not in manifest
    elif shape.target_names:
        same(manifest["classes"], [labels.tolist() for labels in classes])
    else:
        same(manifest["classes"], classes.tolist())


# --- Answers: JSON and CSV, exactly as in-process ------------------------------------------


@pytest.mark.parametrize("name", SHAPES)
def test_json_answers_are_the_estimators_own(client: FlaskClient, name: str) -> None:
    """A batch (rows as lists in manifest order) and single named rows: values, probabilities, scores."""
    shape = SHAPES[name]
    rows = shape.rows()
    expected = shape.expected(rows)
    answer = ok(client.post(f"/v1/models/{name}/predict/batch", json=[list(row.values()) for row in rows]))
    same(answer, {"model": name, "model_version": "1", **expected})
    singular = {"predictions": "prediction", "probabilities": "probabilities", "scores": "score"}
    for index in range(SINGLE_ROWS):
        answer = ok(client.post(f"/v1/models/{name}/predict", json=rows[index]))
        one = {singular[key]: values[index] for key, values in expected.items()}
        same(answer, {"model": name, "model_version": "1", **one}, f"row {index}")


@pytest.mark.parametrize("name", SHAPES)
def test_csv_answers_are_the_estimators_own(client: FlaskClient, name: str) -> None:
    """Each row's cells as sent, then prediction (one column per target), probabilities, score, error."""
    shape = SHAPES[name]
    rows = shape.rows()
    response = client.post(
        f"/v1/models/{name}/predict/csv", data=shape.csv_text(rows), content_type="text/csv"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    answered = list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))
    assert answered == shape.expected_csv(rows)


def test_an_invalid_row_of_a_multi_output_model_is_a_problem(client: FlaskClient) -> None:
    row = {**SHAPES["linnerud_named"].rows()[0], "Situps": "many"}
    response = client.post("/v1/models/linnerud_named/predict", json=row)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert list(response.get_json()["errors"]) == ["Situps"]


# --- What documents and records the answers ----------------------------------------------


@pytest.mark.parametrize("name", SHAPES)
def test_answers_match_the_models_openapi_schemas(shapes_app: Flask, client: FlaskClient, name: str) -> None:
    """The schemas the OpenAPI document is made of load every answer; the document shows the task's shape."""
    shape = SHAPES[name]
    rows = shape.rows()
    with shapes_app.app_context():
        single, many = prediction_schemas(state().registry.get(name))
    many().load(ok(client.post(f"/v1/models/{name}/predict/batch", json=rows)))
    single().load(ok(client.post(f"/v1/models/{name}/predict", json=rows[0])))

    schemas = ok(client.get("/openapi.json"))["components"]["schemas"]
    properties = schemas[f"{name}.Prediction"]["properties"]
    batch = schemas[f"{name}.Predictions"]["properties"]
    assert ("score" in properties, "scores" in batch) == (shape.task == "outlier_detection",) * 2
    if shape.target_names:
        targets = schemas[f"{name}.Targets"]
        assert list(targets["properties"]) == shape.target_names
        assert set(targets["required"]) == set(shape.target_names)
    elif shape.task == "outlier_detection":
        assert properties["prediction"]["enum"] == [1, -1]
    elif shape.task == "clustering":
        assert properties["prediction"]["type"] == "integer" and properties["prediction"]["minimum"] == 0


@pytest.mark.parametrize("name", SHAPES)
def test_the_compact_answer_holds_the_default_answers_values(
    shapes_app: Flask, client: FlaskClient, name: str
) -> None:
    """``format=compact`` names classes and targets once; the values are the default answer's."""
    rows = SHAPES[name].rows()
    path = f"/v1/models/{name}/predict/batch"
    default = ok(client.post(path, json=rows))
    compact = ok(client.post(f"{path}?format=compact", json=rows))
    with shapes_app.app_context():
        model = state().registry.get(name)
        compact_schema(model, prediction_schemas(model)[1])().load(compact)
    assert (compact["model"], compact["model_version"]) == (default["model"], default["model_version"])
    if SHAPES[name].target_names:
        assert compact["targets"] == SHAPES[name].target_names
        rebuilt = [dict(zip(compact["targets"], row, strict=True)) for row in compact["predictions"]]
        assert rebuilt == default["predictions"]
    else:
        assert "targets" not in compact
        assert compact["predictions"] == default["predictions"]
    if "probabilities" in default:
        keys = [label_text(label) for label in compact["classes"]]
        rebuilt = [dict(zip(keys, row, strict=True)) for row in compact["probabilities"]]
        assert rebuilt == default["probabilities"]
    else:
        assert "probabilities" not in compact and "classes" not in compact
    assert compact.get("scores") == default.get("scores")


def test_a_compact_answer_row_by_row_nulls_the_invalid_rows(client: FlaskClient) -> None:
    name = next(
        name for name, shape in SHAPES.items() if shape.task == "classification" and not shape.target_names
    )
    rows = SHAPES[name].rows()[:3]
    bad = {**rows[1], SHAPES[name].features[0]: "many"}
    path = f"/v1/models/{name}/predict/batch"
    answer = ok(client.post(f"{path}?format=compact&on_error=row", json=[rows[0], bad, rows[2]]))
    whole = ok(client.post(f"{path}?format=compact", json=[rows[0], rows[2]]))
    assert answer["predictions"] == [whole["predictions"][0], None, whole["predictions"][1]]
    if "probabilities" in whole:
        assert answer["probabilities"] == [whole["probabilities"][0], None, whole["probabilities"][1]]
    assert list(answer["errors"]) == ["1"]


def test_the_audit_log_records_each_shapes_answer(shapes_app: Flask, client: FlaskClient) -> None:
    """One line per row: outputs by target name for several, the score of an outlier detector."""
    requests = {
        "linnerud_named": "audit-multi",
        "wine_isolation_forest": "audit-outliers",
        "iris_kmeans": "audit-k",
    }
    expected = {}
    for name, request_id in requests.items():
        rows = SHAPES[name].rows()[:4]
        expected[request_id] = SHAPES[name].expected(rows)
        headers = {"X-Request-ID": request_id}
        ok(client.post(f"/v1/models/{name}/predict/batch", json=rows, headers=headers))
    audit = shapes_app.extensions["service"].audit
    audit.close()
    lines = [line for line in read_audit(audit.path) if line["request_id"] in expected]
    assert len(lines) == 12
    for line in lines:
        wanted = expected[line["request_id"]]
        same(line["output"], wanted["predictions"][line["row"]])
        if "scores" in wanted:
            same(line["score"], wanted["scores"][line["row"]])
        else:
            assert "score" not in line


def test_metrics_count_the_outliers_an_outlier_detector_finds(shapes_store: Path) -> None:
    client = build_app(shapes_store).test_client()
    shape = SHAPES["wine_isolation_forest"]
    # Every row of the sample: some of them are outliers to the forest.
    rows = [dict(zip(shape.features, map(float, row), strict=True)) for row in shape.sample.to_numpy()]
    flagged = shape.expected(rows)["predictions"].count(-1)
    assert 0 < flagged < len(rows)
    ok(client.post("/v1/models/wine_isolation_forest/predict/batch", json=rows))
    metrics = scrape(client)
    assert metrics.value("predicted_outliers_total", model="wine_isolation_forest", version="1") == flagged
    assert metrics.value("predictions_total", model="wine_isolation_forest", outcome="success") == len(rows)
    assert metrics.value("predicted_outliers_total", model="iris_kmeans") == 0


@pytest.mark.parametrize(
    ("name", "shown", "hidden"),
    [
        (
            "linnerud_named",
            ['id="result-targets"', 'data-target="Weight"', "<code>prediction_Pulse</code>"],
            ["bars"],
        ),
        ("wine_isolation_forest", ['id="result-score"', "<code>score</code>", "Outlier detection"], ["bars"]),
        ("iris_kmeans", ["Clustering", "the cluster&#39;s index"], ["bars", "result-score"]),
        (
            "wine_linear_svc",
            ["<code>prediction</code>", "the predicted class"],
            ['id="bars"', "probability_"],
        ),
        ("cancer_tree", ['id="bars"', 'data-class="true"', "probability_…"], ["result-targets"]),
    ],
)
def test_the_models_page_follows_its_task(
    client: FlaskClient, name: str, shown: list[str], hidden: list[str]
) -> None:
    response = client.get(f"/models/{name}", headers={"Accept": "text/html"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for text in shown:
        assert text in page, text
    for text in hidden:
        assert text not in page, text


# --- What models add refuses --------------------------------------------------------------


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "store"
    root.mkdir()
    yield root
    assert not any(root.iterdir()), "a refused model left something in the store"


def refusal(store: Path, tmp_path: Path, estimator: Any, *options: str) -> str:
    artifact = tmp_path / "model.joblib"
    joblib.dump(estimator, artifact)
    result = invoke(build_app(store), "add", str(artifact), "--name", "refused", *options)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = result.output.strip().removeprefix("Error: ")
    assert "\n" not in message, message
    return message


IRIS = datasets.load_iris()


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (
            DBSCAN().fit(IRIS.data),
            "DBSCAN is a clusterer without predict(): it labels only the rows it was fitted on, "
            "so it cannot answer new rows.",
        ),
        (
            AgglomerativeClustering(3).fit(IRIS.data),
            "AgglomerativeClustering is a clusterer without predict(): it labels only the rows it was "
            "fitted on, so it cannot answer new rows.",
        ),
        (
            LocalOutlierFactor().fit(IRIS.data),
            "LocalOutlierFactor is an outlier detector without predict(): it labels only the rows it was "
            "fitted on, so it cannot answer new rows "
            "(fit LocalOutlierFactor with novelty=True to score new rows).",
        ),
        (
            GaussianMixture(3, random_state=0).fit(IRIS.data),
            "GaussianMixture is an estimator that is not a classifier, regressor, outlier detector or "
            "clusterer, so it has no prediction to serve.",
        ),
        (
            DecisionTreeClassifier().fit(IRIS.data, IRIS.target.astype(float)),
            "the model's class labels include floats (0.0, 1.0, 2.0); only string, integer or boolean "
            "labels can be served, as JSON keeps their type: refit it on such labels.",
        ),
    ],
    ids=["DBSCAN", "AgglomerativeClustering", "LocalOutlierFactor", "GaussianMixture", "float-labels"],
)
def test_an_unsupported_estimator_is_refused_in_one_sentence(
    empty_store: Path, tmp_path: Path, estimator: Any, message: str
) -> None:
    assert refusal(empty_store, tmp_path, estimator) == message


def test_targets_must_name_one_column_per_output(empty_store: Path, tmp_path: Path) -> None:
    """A model fitted on a DataFrame takes the sample's other columns as extras; its outputs are counted."""
    shape = SHAPES["linnerud_knn"]
    sample = tmp_path / "sample.csv"
    shape.sample.to_csv(sample, index=False)
    message = refusal(empty_store, tmp_path, shape.estimator, "--sample", str(sample), "--target", "Weight")
    assert message.startswith("the model predicts 3 outputs per row; --target names 1 column (Weight)")


def test_a_clusterer_has_no_target(empty_store: Path, tmp_path: Path) -> None:
    shape = SHAPES["iris_kmeans"]
    sample = tmp_path / "sample.csv"
    shape.sample.assign(species=IRIS.target).to_csv(sample, index=False)
    message = refusal(empty_store, tmp_path, shape.estimator, "--sample", str(sample), "--target", "species")
    assert (
        message
        == "a clustering model has no true values to measure: --target is for classifiers and regressors."
    )


# --- A multi-output regressor fitted on numpy, through the real command ------------------


def test_real_command_adds_a_multi_output_linear_regression_fitted_on_numpy(tmp_path: Path) -> None:
    """It failed with "ValueError: cannot reshape array of size 2 into shape (1,)": now it serves."""
    exercise, physiology = datasets.load_linnerud(return_X_y=True)
    model = LinearRegression().fit(exercise, physiology[:, :2])
    artifact = tmp_path / "two_targets.joblib"
    joblib.dump(model, artifact)
    store = tmp_path / "store"
    store.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVICE_", "FLASK_"))}
    env["SERVICE_MODEL_STORE"] = str(store)
    result = run_in_repo([str(FLASK), "--app", "wsgi", "models", "add", str(artifact), "--name", "two"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "added two version 1 (regression, 2 targets, 3 features)" in result.stdout
    answer = ok(
        build_app(store).test_client().post("/v1/models/two/predict/batch", json=exercise[:5].tolist())
    )
    same(answer["predictions"], [{"y0": a, "y1": b} for a, b in model.predict(exercise[:5]).tolist()])
