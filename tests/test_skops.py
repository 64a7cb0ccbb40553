"""Models stored as skops: converted from a pickle, served with the pickle's very answers,
loaded with only the types their manifest trusts, and the only kind served without pickles."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pytest
import skops.io as skops_io
from click.testing import Result
from flask import Flask
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from service.models import ModelStore

FEATURES, TARGETS = make_classification(n_samples=200, n_features=5, n_informative=3, random_state=3)
VALUES, AMOUNTS = make_regression(n_samples=200, n_features=5, random_state=4)

ESTIMATORS = {
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(FEATURES, TARGETS),
    "forest": lambda: RandomForestClassifier(n_estimators=15, random_state=0).fit(FEATURES, TARGETS),
    "boosting": lambda: GradientBoostingRegressor(n_estimators=15, random_state=0).fit(VALUES, AMOUNTS),
}


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["models", *args])


def manifest_of(store: Path, name: str, version: str) -> dict[str, Any]:
    return json.loads((store / name / version / "model.json").read_text())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


def pickled(tmp_path: Path, estimator: Any, name: str = "model.joblib") -> Path:
    path = tmp_path / name
    joblib.dump(estimator, path)
    return path


def stored_forest(make_app: Callable[..., Flask], store: Path, tmp_path: Path) -> None:
    """A forest added as model "m" version 1, converted to skops."""
    path = pickled(tmp_path, ESTIMATORS["forest"]())
    added = invoke(make_app(model_store=store), "add", str(path), "--name", "m", "--format", "skops")
    assert added.exit_code == 0, added.output


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_a_pickle_stored_as_skops_answers_as_the_pickle(
    make_app: Callable[..., Flask], store: Path, tmp_path: Path, kind: str
) -> None:
    estimator = ESTIMATORS[kind]()
    path = pickled(tmp_path, estimator)
    adder = make_app(model_store=store)
    assert invoke(adder, "add", str(path), "--name", "m").exit_code == 0
    added = invoke(adder, "add", str(path), "--name", "m", "--format", "skops")
    assert added.exit_code == 0, added.output
    stored = manifest_of(store, "m", "2")["artifact"]
    assert stored["file"] == "model.skops"
    assert (store / "m" / "2" / "model.skops").exists() and not (store / "m" / "2" / "model.joblib").exists()
    assert stored.get("trusted", []) == (["sklearn.tree._tree.Tree"] if kind != "pipeline" else [])

    rows = (VALUES if kind == "boosting" else FEATURES)[:25].tolist()
    answers = {}
    for version in ("1", "2"):
        client = make_app(model_store=store, model_versions={"m": version}).test_client()
        response = client.post("/v1/models/m/predict/batch", json={"instances": rows})
        assert response.status_code == 200, response.get_json()
        answers[version] = response.get_json()
    assert answers["1"]["model_version"] == "1" and answers["2"]["model_version"] == "2"
    for key in ("predictions", "probabilities"):
        assert answers["1"].get(key) == answers["2"].get(key)


def test_a_tampered_skops_artifact_is_refused(
    make_app: Callable[..., Flask], store: Path, tmp_path: Path
) -> None:
    stored_forest(make_app, store, tmp_path)
    artifact = store / "m" / "1" / "model.skops"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    entry = make_app(model_store=store).extensions["service"].registry.entry("m")
    assert not entry.ready and "SHA-256" in entry.error


def test_a_type_the_manifest_does_not_trust_is_never_loaded(
    make_app: Callable[..., Flask], store: Path, tmp_path: Path
) -> None:
    stored_forest(make_app, store, tmp_path)
    manifest_path = store / "m" / "1" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["artifact"]["trusted"]
    manifest_path.write_text(json.dumps(manifest))
    entry = make_app(model_store=store).extensions["service"].registry.entry("m")
    assert not entry.ready
    assert "cannot be loaded" in entry.error and "sklearn.tree._tree.Tree" in entry.error


def test_a_skops_file_of_library_types_is_added_as_it_is(
    make_app: Callable[..., Flask], store: Path, tmp_path: Path
) -> None:
    forest = ESTIMATORS["forest"]()
    path = tmp_path / "forest.skops"
    skops_io.dump(forest, path)
    added = invoke(make_app(model_store=store), "add", str(path), "--name", "m")
    assert added.exit_code == 0, added.output
    assert manifest_of(store, "m", "1")["artifact"]["file"] == "model.skops"
    client = make_app(model_store=store).test_client()
    answer = client.post("/v1/models/m/predict/batch", json={"instances": FEATURES[:5].tolist()}).get_json()
    assert answer["predictions"] == forest.predict(FEATURES[:5]).tolist()


def test_a_skops_file_that_would_call_a_system_function_is_refused(
    make_app: Callable[..., Flask], store: Path, tmp_path: Path
) -> None:
    hostile = make_pipeline(FunctionTransformer(os.system), LogisticRegression())
    hostile.steps[-1][1].fit(FEATURES, TARGETS)
    path = tmp_path / "hostile.skops"
    skops_io.dump(hostile, path)
    added = invoke(make_app(model_store=store), "add", str(path), "--name", "m")
    assert added.exit_code != 0
    assert "system" in added.output and "outside scikit-learn" in added.output
    assert not (store / "m").exists()


def test_without_pickles_only_skops_models_serve(
    make_app: Callable[..., Flask], store: Path, tmp_path: Path
) -> None:
    path = pickled(tmp_path, ESTIMATORS["forest"]())
    adder = make_app(model_store=store)
    assert invoke(adder, "add", str(path), "--name", "pickled").exit_code == 0
    assert invoke(adder, "add", str(path), "--name", "safe", "--format", "skops").exit_code == 0
    app = make_app(model_store=store, allow_pickle=False)
    registry = app.extensions["service"].registry
    assert registry.entry("safe").ready
    refused = registry.entry("pickled")
    assert (
        not refused.ready
        and "SERVICE_ALLOW_PICKLE=false" in refused.error
        and "--format skops" in refused.error
    )
    client = app.test_client()
    assert client.post("/v1/models/safe/predict", json={"features": FEATURES[0].tolist()}).status_code == 200
    assert (
        client.post("/v1/models/pickled/predict", json={"features": FEATURES[0].tolist()}).status_code == 503
    )
    again = invoke(app, "add", str(path), "--name", "another")
    assert again.exit_code != 0 and "--format skops" in again.output
    assert ModelStore(store).versions("another") == []
