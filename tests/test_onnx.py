"""The compiled runtime: models compiled to ONNX answer as their estimators do, or are refused and say why."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from sklearn import datasets
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from service.config import ConfigError, Settings
from service.models import ModelStore
from service.models.onnx_compile import compile_version, parity_rows
from tests.datasets import PENGUIN_FEATURES, add_penguins, penguins
from tests.estimators import ExplodingRegressor
from tests.helpers import corrupt, store_mixed_model, store_model
from tests.servers import post_json, running_server

DEMO_DATA = {
    "iris": datasets.load_iris().data,
    "breast_cancer": datasets.load_breast_cancer().data,
    "diabetes": datasets.load_diabetes(scaled=False).data,
}


def dataset_frame(store: Path, name: str) -> pd.DataFrame:
    names = ModelStore(store).manifest(name, "1").feature_names
    return pd.DataFrame(DEMO_DATA[name], columns=list(names))


@pytest.fixture(scope="module")
def compiled_store_path(demo_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, each compiled with its whole dataset as the sample; never modified by tests."""
    root = tmp_path_factory.mktemp("compiled") / "store"
    shutil.copytree(demo_store_path, root)
    for name in DEMO_DATA:
        artifact = compile_version(ModelStore(root), name, "1", dataset_frame(root, name))
        assert artifact.verified, artifact.reason
    return root


@pytest.fixture
def compiled_copy(compiled_store_path: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(compiled_store_path, root)
    return root


@pytest.mark.parametrize("name", list(DEMO_DATA))
def test_compiled_demo_models_answer_as_their_estimators(compiled_store_path: Path, name: str) -> None:
    store = ModelStore(compiled_store_path)
    compiled, estimator = store.load(name, "1", runtime="onnx"), store.load(name, "1", runtime="sklearn")
    assert (compiled.runtime, estimator.runtime) == ("onnx", "sklearn")
    manifest = compiled.manifest
    # The dataset and rows drawn within the manifest's ranges (with missing values where allowed).
    rows = np.vstack([DEMO_DATA[name], parity_rows(estimator)])
    ours, theirs = compiled.predict(rows), estimator.predict(rows)
    if manifest.task == "classification":
        assert ours.values.tolist() == theirs.values.tolist()
        assert np.abs(ours.probabilities - theirs.probabilities).max() <= 1e-5
    else:
        assert np.allclose(ours.values, theirs.values, rtol=1e-5, atol=1e-5)
    assert manifest.onnx.sha256 and manifest.onnx.parity["rows"] > len(DEMO_DATA[name])


@pytest.mark.parametrize(
    "estimator",
    [IsolationForest(random_state=0), KMeans(3, n_init=3, random_state=0), SVC()],
    ids=["outliers", "clusters", "labels-without-probabilities"],
)
def test_other_tasks_compile_with_the_same_answers(estimator: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.uniform(0, 10, 200)})
    labels = np.where(frame["a"] > 0, "yes", "no")
    estimator.fit(frame.to_numpy(), labels)  # the outlier detector and the clusterer ignore the labels
    store_model(tmp_path, estimator, "model", "1", sample=frame)
    artifact = compile_version(ModelStore(tmp_path), "model", "1", frame)
    assert artifact.verified, artifact.reason
    compiled = ModelStore(tmp_path).load("model", "1")
    assert compiled.runtime == "onnx"
    rows = parity_rows(compiled)
    ours, theirs = (
        compiled.predict(rows),
        ModelStore(tmp_path).load("model", "1", runtime="sklearn").predict(rows),
    )
    assert ours.values.tolist() == theirs.values.tolist()
    if theirs.scores is not None:
        assert np.allclose(ours.scores, theirs.scores, rtol=1e-5, atol=1e-5)


def test_forest_compares_in_float32_and_leaves_missing_values_to_the_estimator(
    compiled_store_path: Path,
) -> None:
    """Double input parts from the forest's float32 thresholds; skl2onnx drops how trees route NaN."""
    artifact = ModelStore(compiled_store_path).manifest("breast_cancer", "1").onnx
    assert artifact.input_type == "float"
    assert artifact.missing_values == "sklearn"
    assert "missing value" in artifact.parity["missing_values"]
    iris = ModelStore(compiled_store_path).manifest("iris", "1").onnx
    assert (iris.input_type, iris.missing_values) == ("double", "onnx")


def test_metadata_header_and_metrics_name_the_runtime(
    make_app: Callable[..., Flask], compiled_store_path: Path
) -> None:
    for runtime, expected in (("auto", "onnx"), ("onnx", "onnx"), ("sklearn", "sklearn")):
        client = make_app(model_store=compiled_store_path, runtime=runtime).test_client()
        meta = client.get("/v1/models/breast_cancer").get_json()
        assert meta["runtime"] == expected
        assert meta["onnx"]["status"] == "verified"  # the manifest's, whatever serves it
        answer = client.post(
            "/v1/models/breast_cancer/predict", json={"features": DEMO_DATA["breast_cancer"][0].tolist()}
        )
        assert answer.status_code == 200
        assert answer.headers["X-Model-Runtime"] == expected
        metrics = client.get("/metrics").get_data(as_text=True)
        labels = f'model="breast_cancer",runtime="{expected}",version="1"'
        assert f"sklearn_service_model_serving_info{{{labels}}} 1.0" in metrics


def test_tampered_onnx_artifact_refuses_the_model_unless_sklearn_serves_it(
    make_app: Callable[..., Flask], compiled_copy: Path
) -> None:
    corrupt(compiled_copy / "iris" / "1" / "model.onnx")
    client = make_app(model_store=compiled_copy).test_client()
    meta = client.get("/v1/models/iris").get_json()
    assert meta["ready"] is False
    assert "ONNX artifact iris/1/model.onnx has SHA-256" in meta["error"]
    assert client.post("/v1/models/iris/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 503
    assert client.get("/v1/models/diabetes").get_json()["runtime"] == "onnx"  # the others serve
    # The operator's way out: the pickle alone, which is intact.
    client = make_app(model_store=compiled_copy, runtime="sklearn").test_client()
    answer = client.post("/v1/models/iris/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
    assert answer.status_code == 200 and answer.headers["X-Model-Runtime"] == "sklearn"


def test_runtime_onnx_refuses_models_without_a_verified_artifact(
    make_app: Callable[..., Flask], store_path: Path
) -> None:
    client = make_app(model_store=store_path, runtime="onnx").test_client()
    meta = client.get("/v1/models/iris").get_json()
    assert meta["ready"] is False
    assert "SERVICE_RUNTIME=onnx serves compiled models only" in meta["error"]
    auto = make_app(model_store=store_path).test_client().get("/v1/models/iris").get_json()
    assert auto["runtime"] == "sklearn" and "onnx" not in auto  # an older manifest loads unchanged


def test_unconvertible_model_keeps_serving_with_sklearn_and_says_why(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.uniform(0, 5, 50), "b": rng.uniform(0, 1, 50)})
    store_model(store, ExplodingRegressor().fit(frame.to_numpy(), np.zeros(50)), "custom", "1", sample=frame)
    app = make_app(model_store=store)
    result = app.test_cli_runner().invoke(args=["models", "compile", "custom"])
    assert result.exit_code == 1
    assert "custom version 1 was not compiled and stays served by scikit-learn" in result.output
    assert "skl2onnx cannot convert it" in result.output
    assert not (store / "custom" / "1" / "model.onnx").exists()
    client = make_app(model_store=store).test_client()  # a restart reads the refusal from the manifest
    meta = client.get("/v1/models/custom").get_json()
    assert meta["runtime"] == "sklearn"
    assert meta["onnx"]["status"] == "refused" and "skl2onnx cannot convert it" in meta["onnx"]["reason"]
    answer = client.post("/v1/models/custom/predict", json={"features": [1.0, 0.5]})
    assert answer.status_code == 200 and answer.headers["X-Model-Runtime"] == "sklearn"


def test_pipeline_with_an_imputer_and_one_hot_string_categories_compiles_to_one_input_per_feature(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    """Penguins: numbers imputed and scaled, island and sex one-hot encoded, missing values included."""
    store = tmp_path / "store"
    store.mkdir()
    add_penguins(make_app(model_store=store), tmp_path)
    artifact = compile_version(ModelStore(store), "penguins", "1", penguins())
    assert artifact.verified, artifact.reason
    assert artifact.inputs == "columns"
    frame = penguins()[PENGUIN_FEATURES].astype(object)
    rows = frame.where(frame.notna(), None).to_dict("records")
    assert any(None in row.values() for row in rows)
    answers = {}
    for runtime in ("auto", "sklearn"):
        client = make_app(model_store=store, runtime=runtime).test_client()
        response = client.post("/v1/models/penguins/predict/batch", json=rows)
        assert response.status_code == 200, response.get_json()
        answers[response.headers["X-Model-Runtime"]] = response.get_json()
    assert answers["onnx"]["predictions"] == answers["sklearn"]["predictions"]
    for ours, theirs in zip(
        answers["onnx"]["probabilities"], answers["sklearn"]["probabilities"], strict=True
    ):
        assert all(abs(ours[label] - theirs[label]) <= 1e-5 for label in theirs)


def test_mixed_types_compile_and_several_outputs_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    store_mixed_model(store)  # a float, an int, a bool and a one-hot encoded category
    assert compile_version(ModelStore(store), "mixed", "1").verified
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.uniform(0, 1, 60), "b": rng.uniform(0, 1, 60)})
    targets = np.column_stack([frame["a"] > 0.5, frame["b"] > 0.5]).astype(int)
    store_model(store, DecisionTreeClassifier().fit(frame.to_numpy(), targets), "two", "1", sample=frame)
    artifact = compile_version(ModelStore(store), "two", "1")
    assert artifact.status == "refused"
    assert artifact.reason == "a model with several outputs is served by scikit-learn only"


def test_models_add_with_onnx_compiles_the_added_model(
    make_app: Callable[..., Flask], demo_store_path: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    sample = tmp_path / "iris.csv"
    names = ModelStore(demo_store_path).manifest("iris", "1").feature_names
    pd.DataFrame(DEMO_DATA["iris"], columns=list(names)).to_csv(sample, index=False)
    pickle = demo_store_path / "iris" / "1" / "model.joblib"
    app = make_app(model_store=store)
    args = ["models", "add", str(pickle), "--name", "flowers", "--sample", str(sample), "--onnx"]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    assert "compiled to ONNX (double input)" in result.output
    manifest = json.loads((store / "flowers" / "1" / "model.json").read_text())
    assert manifest["onnx"]["status"] == "verified"
    assert manifest["onnx"]["parity"]["rows"] >= 150 + 2000
    assert make_app(model_store=store).test_client().get("/v1/models/flowers").get_json()["runtime"] == "onnx"


def test_models_compile_names_what_it_compiled_and_refuses_unknown_models(
    make_app: Callable[..., Flask], store_path: Path
) -> None:
    app = make_app(model_store=store_path)
    result = app.test_cli_runner().invoke(args=["models", "compile", "iris", "--version", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "iris version 1: compiled to ONNX (double input), answers as the estimator"
    )
    listing = app.test_cli_runner().invoke(args=["models", "list"]).output
    assert "onnx verified" in next(line for line in listing.splitlines() if " iris " in line)
    result = app.test_cli_runner().invoke(args=["models", "compile", "nosuch"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: Model 'nosuch': the store has no versions of it")


# --- The real server ----------------------------------------------------------------


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _maps_onnxruntime(pid: int) -> bool:
    return "onnxruntime" in Path(f"/proc/{pid}/maps").read_text()


def test_gunicorn_serves_compiled_models_with_the_estimators_answers(
    compiled_store_path: Path, tmp_path: Path
) -> None:
    """Same rows, SERVICE_RUNTIME=onnx and sklearn: identical labels, probabilities within 1e-5.

    The master loads every model but starts no onnxruntime (importing it starts a
    thread, and the master forks): each worker starts its own sessions.
    """
    rows = np.vstack(
        [
            DEMO_DATA["breast_cancer"],
            parity_rows(ModelStore(compiled_store_path).load("breast_cancer", "1"))[:500],
        ]
    )
    body = {"instances": [[None if np.isnan(value) else value for value in row] for row in rows.tolist()]}
    answers = {}
    for runtime in ("onnx", "sklearn"):
        with running_server(compiled_store_path, tmp_path / runtime, SERVICE_RUNTIME=runtime) as server:
            if runtime == "onnx":
                master = server.proc.pid
                assert _threads(master) == 1
                assert not _maps_onnxruntime(master)
                assert all(_maps_onnxruntime(pid) for pid in server.worker_pids())
            single = post_json(server, "/v1/models/breast_cancer/predict", {"features": body["instances"][0]})
            assert single.headers["X-Model-Runtime"] == runtime
            response = post_json(server, "/v1/models/breast_cancer/predict/batch", body)
            assert response.status_code == 200, response.text
            assert response.headers["X-Model-Runtime"] == runtime
            answers[runtime] = response.json()
    assert answers["onnx"]["predictions"] == answers["sklearn"]["predictions"]
    for ours, theirs in zip(
        answers["onnx"]["probabilities"], answers["sklearn"]["probabilities"], strict=True
    ):
        assert ours.keys() == theirs.keys()
        assert all(abs(ours[label] - theirs[label]) <= 1e-5 for label in ours)


def test_service_runtime_setting_takes_three_values_and_names_a_bad_one() -> None:
    assert Settings.from_env({}).runtime == "auto"
    assert Settings.from_env({"SERVICE_RUNTIME": " ONNX "}).runtime == "onnx"
    with pytest.raises(
        ConfigError, match="SERVICE_RUNTIME='fast' is not valid: must be one of auto, sklearn, onnx"
    ):
        Settings.from_env({"SERVICE_RUNTIME": "fast"})
