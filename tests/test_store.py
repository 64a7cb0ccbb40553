"""The model store: verified loading, version selection, readiness of broken models."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from service.app import unservable_reason
from service.errors import (
    ArtifactHashMismatch,
    ArtifactMissing,
    IncompatibleVersion,
    ManifestError,
)
from service.models import ModelStore, load_registry
from service.models.versions import version_key
from tests.estimators import ArtifactTrap
from tests.helpers import corrupt, edit_manifest, store_model, tiny_frame
from tests.rows import JsonValidator

SETOSA = [5.1, 3.5, 1.4, 0.2]


def test_loads_and_predicts(store_path: Path) -> None:
    model = ModelStore(store_path).load("iris", "1")
    assert model.name == "iris" and model.version == "1"
    assert model.warnings == ()
    prediction = model.predict(JsonValidator(model.manifest).validate_one(SETOSA))
    assert prediction.values.tolist() == ["setosa"]
    assert prediction.probabilities.shape == (1, 3)


def test_hash_mismatch_is_refused_before_unpickling(store_path: Path, tmp_path: Path) -> None:
    """An artifact whose bytes differ from the manifest's SHA-256 is never unpickled."""
    marker = tmp_path / "unpickled"
    joblib.dump(ArtifactTrap(str(marker)), store_path / "iris" / "1" / "model.joblib")
    with pytest.raises(ArtifactHashMismatch) as caught:
        ModelStore(store_path).load("iris", "1")
    assert not marker.exists()
    assert "'iris' version 1" in str(caught.value)
    assert "refusing to unpickle" in caught.value.reason
    # the trap is real: loading it unchecked would have run its code
    joblib.load(store_path / "iris" / "1" / "model.joblib")
    assert marker.exists()


def test_flipped_byte_is_a_hash_mismatch(store_path: Path) -> None:
    corrupt(store_path / "iris" / "1" / "model.joblib")
    with pytest.raises(ArtifactHashMismatch):
        ModelStore(store_path).load("iris", "1")


def test_missing_artifact(store_path: Path) -> None:
    (store_path / "iris" / "1" / "model.joblib").unlink()
    with pytest.raises(ArtifactMissing, match=r"iris/1/model\.joblib is missing"):
        ModelStore(store_path).load("iris", "1")


def test_missing_manifest(store_path: Path) -> None:
    (store_path / "iris" / "1" / "model.json").unlink()
    with pytest.raises(ManifestError, match=r"'iris' version 1: manifest iris/1/model\.json is missing"):
        ModelStore(store_path).load("iris", "1")


def test_manifest_that_is_not_json(store_path: Path) -> None:
    (store_path / "iris" / "1" / "model.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ModelStore(store_path).load("iris", "1")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"task": "ranking"}, "task"),
        ({"task": "clustering"}, "classes"),
        ({"targets": ["species"]}, "targets"),
        ({"targets": ["a", "a"]}, "targets"),
        ({"targets": ["a", "b"]}, "classes"),
        ({"targets": ["a", "b"], "classes": [["x", "y"], [1.5]]}, "classes"),
        ({"features": []}, "features"),
        ({"artifact": {"file": "../../etc/passwd", "sha256": "0" * 64}}, "file"),
        ({"classes": None}, "classes"),
        ({"trained_with": {"python": "3.11"}}, "trained_with"),
        ({"surprise": 1}, "surprise"),
        # '$' also matches before a final newline: every pattern must match the whole string
        ({"name": "iris\n"}, "name"),
        ({"version": "1\n"}, "version"),
        ({"artifact": {"file": "model.joblib\n", "sha256": "0" * 64}}, "file"),
        ({"artifact": {"file": "model.joblib", "sha256": "0" * 64 + "\n"}}, "sha256"),
        ({"artifact": {"file": "..", "sha256": "0" * 64}}, "file"),
        ({"artifact": {"file": "model\u0000.joblib", "sha256": "0" * 64}}, "file"),
        ({"evaluation": {"data": "training", "rows": 38}}, "evaluation"),
        ({"evaluation": {"data": "held_out", "rows": 0}}, "evaluation"),
        ({"metrics": {}}, "evaluation"),  # how metrics were measured, but no metrics
        ({"typical_row": {"kind": "guess"}}, "typical_row"),
    ],
)
def test_malformed_manifest_names_the_field(store_path: Path, changes: dict[str, Any], field: str) -> None:
    edit_manifest(store_path / "iris" / "1", **changes)
    with pytest.raises(ManifestError) as caught:
        ModelStore(store_path).load("iris", "1")
    assert "malformed" in caught.value.reason and field in caught.value.reason


def test_a_manifest_without_typical_row_or_evaluation_still_loads(store_path: Path) -> None:
    """Both fields are optional: a manifest written before them loads, its metrics without a label."""
    directory = store_path / "iris" / "1"
    document = json.loads((directory / "model.json").read_text())
    assert document["evaluation"] == {
        "data": "held_out",
        "rows": 38,
        "source": "sklearn.datasets.load_iris: the rows held out by the split (seed 42)",
    }
    assert document["typical_row"]["kind"] == "training_data"
    del document["evaluation"], document["typical_row"]
    (directory / "model.json").write_text(json.dumps(document))
    manifest = ModelStore(store_path).load("iris", "1").manifest
    assert manifest.evaluation is None and manifest.typical_row is None
    assert manifest.metrics and manifest.metrics_label is None
    assert manifest.typical_row_known


def test_a_typical_row_needs_every_typical_value(store_path: Path) -> None:
    directory = store_path / "iris" / "1"
    features = json.loads((directory / "model.json").read_text())["features"]
    del features[2]["typical"]
    edit_manifest(directory, features=features)
    with pytest.raises(ManifestError) as caught:
        ModelStore(store_path).load("iris", "1")
    assert "typical_row" in caught.value.reason and "petal_length" in caught.value.reason


def test_manifest_must_describe_its_own_directory(store_path: Path) -> None:
    edit_manifest(store_path / "iris" / "1", name="other")
    with pytest.raises(ManifestError, match="describes 'other'"):
        ModelStore(store_path).load("iris", "1")


def test_manifest_must_match_the_model(store_path: Path) -> None:
    edit_manifest(store_path / "iris" / "1", classes=["a", "b", "c"])
    with pytest.raises(ManifestError, match="classes"):
        ModelStore(store_path).load("iris", "1")


def test_a_directory_name_ending_in_a_newline_is_not_discovered(store_path: Path, make_app: Any) -> None:
    """``nl\\n/1`` and ``iris/1\\n`` are not models or versions, even with manifests that say so."""
    named = store_path / "nl\n" / "1"
    shutil.copytree(store_path / "iris" / "1", named)
    edit_manifest(named, name="nl\n")
    versioned = store_path / "iris" / "1\n"
    shutil.copytree(store_path / "iris" / "1", versioned)
    edit_manifest(versioned, version="1\n")
    store = ModelStore(store_path)
    assert store.names() == ["breast_cancer", "diabetes", "iris"]
    assert store.versions("iris") == ["1"]
    assert store.versions("nl\n") == []
    ready = make_app(model_store=store_path).test_client().get("/ready")
    assert ready.status_code == 200
    assert sorted(ready.get_json()["models"]) == ["breast_cancer", "diabetes", "iris"]


def test_versions_are_ordered_numerically(tmp_path: Path) -> None:
    frame, labels = tiny_frame()
    model = LogisticRegression().fit(frame.to_numpy(), labels)
    for version in ("1", "2", "10", "9"):
        store_model(tmp_path, model, "tiny", version)
    store = ModelStore(tmp_path)
    assert store.versions("tiny") == ["1", "2", "9", "10"]
    assert store.resolve("tiny") == "10"
    assert store.resolve("tiny", "2") == "2"
    assert store.next_version("tiny") == "11"
    with pytest.raises(ArtifactMissing, match="pinned version"):
        store.resolve("tiny", "3")
    assert sorted(["1.10", "1.9", "beta", "2"], key=version_key) == ["beta", "1.9", "1.10", "2"]


def test_highest_version_serves_unless_pinned(tmp_path: Path) -> None:
    frame, labels = tiny_frame()
    model = LogisticRegression().fit(frame.to_numpy(), labels)
    for version in ("1", "2"):
        store_model(tmp_path, model, "tiny", version)
    store = ModelStore(tmp_path)
    assert load_registry(store).get("tiny").version == "2"
    assert load_registry(store, pins={"tiny": "1"}).get("tiny").version == "1"
    pinned_missing = load_registry(store, pins={"tiny": "7"}).entry("tiny")
    assert not pinned_missing.ready and "pinned version" in pinned_missing.error


def test_version_mismatch_loads_with_a_warning(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = json.loads((store_path / "iris" / "1" / "model.json").read_text())
    edit_manifest(store_path / "iris" / "1", trained_with={**manifest["trained_with"], "sklearn": "0.24.2"})
    with caplog.at_level(logging.WARNING):
        model = ModelStore(store_path).load("iris", "1")
    assert any("trained with scikit-learn 0.24.2" in warning for warning in model.warnings)
    assert "trained with scikit-learn 0.24.2" in caplog.text and "iris" in caplog.text
    with pytest.raises(IncompatibleVersion, match="strict"):
        ModelStore(store_path).load("iris", "1", strict_versions=True)


def test_version_mismatch_shows_in_metadata_and_strict_mode_refuses(store_path: Path, make_app: Any) -> None:
    manifest = json.loads((store_path / "iris" / "1" / "model.json").read_text())
    edit_manifest(store_path / "iris" / "1", trained_with={**manifest["trained_with"], "sklearn": "0.24.2"})
    relaxed = make_app(model_store=store_path).test_client()
    assert "0.24.2" in relaxed.get("/v1/models/iris").get_json()["warnings"][0]
    assert relaxed.get("/ready").status_code == 200

    strict = make_app(model_store=store_path, strict_versions=True).test_client()
    ready = strict.get("/ready")
    assert ready.status_code == 503 and "iris" in ready.get_json()["detail"]
    assert strict.post("/predict", json={"features": SETOSA}).status_code == 503
    assert (
        strict.post(
            "/v1/models/diabetes/predict/batch", json=[[50, 1, 25, 90, 180, 110, 50, 4, 4.6, 90]]
        ).status_code
        == 200
    )


def test_one_broken_model_is_not_ready_and_others_serve(
    store_path: Path, make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt(store_path / "diabetes" / "1" / "model.joblib")
    with caplog.at_level(logging.ERROR):
        client = make_app(model_store=store_path).test_client()
    assert "'diabetes' version 1" in caplog.text and "SHA-256" in caplog.text

    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.mimetype == "application/problem+json"
    body = ready.get_json()
    assert "diabetes" in body["detail"]
    assert body["models"]["diabetes"]["ready"] is False
    assert body["models"]["iris"]["ready"] is True

    predict = client.post(
        "/v1/models/diabetes/predict", json={"features": [50, 1, 25, 90, 180, 110, 50, 4, 4.6, 90]}
    )
    assert predict.status_code == 503
    assert "SHA-256" in predict.get_json()["detail"]
    assert client.post("/predict", json={"features": SETOSA}).get_json()["prediction"] == "setosa"
    listed = {m["name"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert listed["diabetes"]["ready"] is False and "SHA-256" in listed["diabetes"]["error"]
    assert str(store_path) not in json.dumps(listed)  # no host paths in answers


def test_configured_model_missing_from_store_is_not_ready(store_path: Path, make_app: Any) -> None:
    client = make_app(model_store=store_path, models=("iris", "ghost")).test_client()
    body = client.get("/ready").get_json()
    assert set(body["models"]) == {"iris", "ghost"}
    assert "ghost" in body["detail"]
    assert client.post("/v1/models/ghost/predict", json={}).status_code == 503
    assert client.post("/v1/models/diabetes/predict", json={}).status_code == 404  # not configured


def test_unservable_reason(store_path: Path, make_app: Any, tmp_path: Path) -> None:

    assert unservable_reason(make_app(model_store=store_path)) is None
    for name in ("iris", "diabetes", "breast_cancer"):
        corrupt(store_path / name / "1" / "model.joblib")
    reason = unservable_reason(make_app(model_store=store_path))
    assert reason and "no model could be loaded" in reason
    assert all(name in reason for name in ("iris", "diabetes", "breast_cancer"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no models" in unservable_reason(make_app(model_store=empty))


def test_add_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    frame, labels = tiny_frame()
    model = LogisticRegression().fit(frame.to_numpy(), labels)
    directory = store_model(tmp_path, model, "tiny", "1")
    assert sorted(p.name for p in directory.iterdir()) == ["model.joblib", "model.json"]
    with pytest.raises(FileExistsError):
        store_model(tmp_path, model, "tiny", "1")
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["1"]  # no staging left behind
    shutil.rmtree(directory)
