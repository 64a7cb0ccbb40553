"""``flask --app wsgi models add|list|verify|demo``: through Flask's CLI runner, and for real."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from flask import Flask
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris, load_linnerud
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score
from sklearn.neighbors import RadiusNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from service.models import ModelStore
from tests.estimators import FailingClassifier
from tests.servers import run_in_repo

FLASK = Path(sys.executable).parent / "flask"

CONTRACTS = ["month-to-month", "one-year", "two-year"]
NUMERIC = ["tenure", "monthly_charges"]
FEATURES = [*NUMERIC, "contract"]
DEMO_NAMES = ["iris", "diabetes", "breast_cancer"]  # in training order


# --- A churn model, fitted on a DataFrame with a string category -----------------------


@pytest.fixture(scope="module")
def churn_frame() -> pd.DataFrame:
    """300 customers: tenure in months, monthly charges, contract kind, and whether they left."""
    rng = np.random.default_rng(11)
    rows = 300
    tenure = rng.integers(1, 73, size=rows)
    charges = np.round(rng.uniform(18.0, 120.0, size=rows), 2)
    contract = rng.choice(CONTRACTS, size=rows, p=[0.5, 0.3, 0.2])
    score = 1.5 - 0.05 * tenure + 0.02 * charges - 1.5 * (contract != "month-to-month")
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-score)), "yes", "no")
    return pd.DataFrame(
        {"tenure": tenure, "monthly_charges": charges, "contract": contract, "churned": churned}
    )


def churn_model() -> Pipeline:
    """Scaled numbers and a one-hot contract (unknown contracts ignored), then a logistic regression."""
    return Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), NUMERIC),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["contract"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    )


@pytest.fixture(scope="module")
def churn_pipeline(churn_frame: pd.DataFrame) -> Pipeline:
    return churn_model().fit(churn_frame[FEATURES], churn_frame["churned"])


@pytest.fixture
def churn_files(churn_pipeline: Pipeline, churn_frame: pd.DataFrame, tmp_path: Path) -> tuple[Path, Path]:
    """The pickled pipeline and a sample CSV that includes the label column."""
    artifact = tmp_path / "churn.joblib"
    joblib.dump(churn_pipeline, artifact)
    sample = tmp_path / "churn_sample.csv"
    churn_frame.to_csv(sample, index=False)
    return artifact, sample


@pytest.fixture
def empty_store(tmp_path: Path) -> Path:
    root = tmp_path / "empty_store"
    root.mkdir()
    return root


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["models", *args])


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def store_tree(root: Path) -> list[str]:
    """Every path in the store, relative to it, hidden staging directories included."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


# --- models add --------------------------------------------------------------------


@pytest.fixture
def churn_store(make_app: Callable[..., Flask], empty_store: Path, churn_files: tuple[Path, Path]) -> Path:
    """An empty store after ``models add churn.joblib --name churn --sample CSV --target churned``."""
    artifact, sample = churn_files
    result = invoke(
        make_app(model_store=empty_store),
        "add",
        str(artifact),
        "--name",
        "churn",
        "--sample",
        str(sample),
        "--target",
        "churned",
    )
    assert result.exit_code == 0, result.output
    assert "added churn version 1 (classification, 3 features)" in result.output
    return empty_store


def test_add_with_sample_writes_a_manifest_from_model_and_data(
    churn_store: Path,
    churn_files: tuple[Path, Path],
    churn_pipeline: Pipeline,
    churn_frame: pd.DataFrame,
) -> None:
    """Types and ranges come from the sample, classes from the model, accuracy from the labels."""
    artifact, sample = churn_files
    manifest = read_json(churn_store / "churn" / "1" / "model.json")
    assert manifest["name"] == "churn"
    assert manifest["version"] == "1"
    assert manifest["task"] == "classification"
    features = {feature["name"]: feature for feature in manifest["features"]}
    assert list(features) == FEATURES

    tenure = features["tenure"]
    assert tenure["type"] == "int"
    assert tenure["min"] <= churn_frame["tenure"].min()
    assert tenure["max"] >= churn_frame["tenure"].max()
    charges = features["monthly_charges"]
    assert charges["type"] == "float"
    assert charges["min"] <= churn_frame["monthly_charges"].min()
    assert charges["max"] >= churn_frame["monthly_charges"].max()
    assert features["contract"]["type"] == "category"
    assert features["contract"]["categories"] == CONTRACTS

    assert manifest["classes"] == ["no", "yes"]
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert manifest["artifact"]["sha256"] == digest
    stored = churn_store / "churn" / "1" / manifest["artifact"]["file"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    accuracy = accuracy_score(churn_frame["churned"], churn_pipeline.predict(churn_frame[FEATURES]))
    assert manifest["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert manifest["dataset"] == {"sample": sample.name, "rows": len(churn_frame)}


def test_added_churn_model_predicts_over_http(
    churn_store: Path, make_app: Callable[..., Flask], churn_pipeline: Pipeline
) -> None:
    """A fresh app answers named and list rows as the pipeline does, and names a bad category."""
    client = make_app(model_store=churn_store).test_client()
    assert client.get("/ready").status_code == 200
    rows = [
        {"tenure": 12, "monthly_charges": 70.25, "contract": "one-year"},
        {"tenure": 2, "monthly_charges": 99.5, "contract": "month-to-month"},
    ]
    for row in rows:
        frame = pd.DataFrame([row], columns=FEATURES)
        label = churn_pipeline.predict(frame)[0]
        probabilities = dict(
            zip(churn_pipeline.classes_, churn_pipeline.predict_proba(frame)[0], strict=True)
        )
        for body in (row, {"features": [row[name] for name in FEATURES]}):
            response = client.post("/v1/models/churn/predict", json=body)
            assert response.status_code == 200, response.get_json()
            answer = response.get_json()
            assert answer["model"] == "churn"
            assert answer["prediction"] == label
            assert answer["probabilities"].keys() == {"no", "yes"}
            for name, probability in probabilities.items():
                assert answer["probabilities"][name] == pytest.approx(probability, rel=0, abs=1e-12)

    # The encoder ignores categories it never saw: one is predicted, with a warning.
    response = client.post("/v1/models/churn/predict", json={**rows[0], "contract": "weekly"})
    assert response.status_code == 200
    assert list(response.get_json()["warnings"]) == ["contract"]
    response = client.post("/v1/models/churn/predict", json={**rows[0], "contract": 12})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert list(problem["errors"]) == ["contract"]
    assert "contract" in problem["detail"]


def test_add_without_sample_takes_categories_and_a_typical_row_from_the_estimator(
    make_app: Callable[..., Flask],
    empty_store: Path,
    churn_files: tuple[Path, Path],
    churn_pipeline: Pipeline,
) -> None:
    """With no sample, ``contract`` gets the encoder's categories, numeric columns become floats, and
    the typical row is what the pipeline's first step learned: the scaler's means, a learned category."""
    artifact, _ = churn_files
    result = invoke(make_app(model_store=empty_store), "add", str(artifact), "--name", "churn")
    assert result.exit_code == 0, result.output
    manifest = read_json(empty_store / "churn" / "1" / "model.json")
    features = {feature["name"]: feature for feature in manifest["features"]}
    assert list(features) == FEATURES
    assert features["tenure"]["type"] == "float"
    assert features["monthly_charges"]["type"] == "float"
    assert features["contract"]["type"] == "category"
    assert features["contract"]["categories"] == CONTRACTS
    assert features["contract"]["accepts_unknown"] is True  # handle_unknown="ignore"
    scaler = churn_pipeline.named_steps["prepare"].named_transformers_["num"]
    for name, mean in zip(NUMERIC, scaler.mean_, strict=True):
        assert features[name]["typical"] == pytest.approx(mean, rel=1e-5)
    encoder = churn_pipeline.named_steps["prepare"].named_transformers_["cat"]
    assert features["contract"]["typical"] == encoder.categories_[0][0]
    assert manifest["typical_row"]["kind"] == "estimator"
    assert "StandardScaler" in manifest["typical_row"]["source"]
    assert "OneHotEncoder" in manifest["typical_row"]["source"]
    assert manifest["classes"] == ["no", "yes"]
    assert manifest["metrics"] == {} and "evaluation" not in manifest
    assert f"typical row: {manifest['typical_row']['source']}" in result.output
    assert "warning: without --sample the manifest records no ranges" in result.output
    assert "no typical row is known" not in result.output


def test_add_without_sample_or_statistics_warns_that_no_typical_row_is_known(
    make_app: Callable[..., Flask], empty_store: Path, tmp_path: Path
) -> None:
    """A tree keeps no statistics of its inputs: the manifest has no typical values, and the CLI says so."""
    X, y = load_iris(return_X_y=True)
    artifact = tmp_path / "tree.joblib"
    joblib.dump(DecisionTreeClassifier(random_state=0).fit(X, y), artifact)
    app = make_app(model_store=empty_store)
    result = invoke(app, "add", str(artifact), "--name", "tree")
    assert result.exit_code == 0, result.output
    manifest = read_json(empty_store / "tree" / "1" / "model.json")
    assert all("typical" not in feature for feature in manifest["features"])
    assert "typical_row" not in manifest
    assert "warning: without --sample the manifest records no ranges" in result.output
    assert "warning: no typical row is known" in result.output
    assert invoke(app, "verify").output.splitlines() == ["ok   tree 1"]


def test_radius_neighbours_added_without_sample_predicts_a_stored_training_row(
    make_app: Callable[..., Flask], empty_store: Path, tmp_path: Path
) -> None:
    """A radius-neighbours classifier finds no neighbour near a made-up all-zeros row; its typical row
    is a training row it keeps, so it is added, served, and answers as it does in-process."""
    X = np.full((6, 2), 5.0) + np.arange(6)[:, None]
    model = RadiusNeighborsClassifier().fit(X, [0, 1] * 3)
    artifact = tmp_path / "radius.joblib"
    joblib.dump(model, artifact)
    result = invoke(make_app(model_store=empty_store), "add", str(artifact), "--name", "radius")
    assert result.exit_code == 0, result.output
    manifest = read_json(empty_store / "radius" / "1" / "model.json")
    typical = [feature["typical"] for feature in manifest["features"]]
    assert typical in X.tolist()
    assert manifest["typical_row"]["kind"] == "estimator"
    assert "RadiusNeighborsClassifier" in manifest["typical_row"]["source"]
    assert "warning: predicting" not in result.output

    client = make_app(model_store=empty_store).test_client()
    assert client.get("/ready").status_code == 200
    assert client.get("/v1/models/radius").get_json()["warnings"] == []
    answer = client.post("/v1/models/radius/predict", json={"features": typical}).get_json()
    assert answer["prediction"] == model.predict([typical])[0]


def test_a_made_up_row_that_fails_is_a_warning(
    make_app: Callable[..., Flask], empty_store: Path, tmp_path: Path
) -> None:
    """Behind a step that learns nothing, the radius model's check row is made up (zeros) and finds no
    neighbour: the model is added with a warning quoting the estimator, and serves real rows."""
    X = np.full((6, 2), 5.0) + np.arange(6)[:, None]
    model = make_pipeline(FunctionTransformer(), RadiusNeighborsClassifier()).fit(X, [0, 1] * 3)
    artifact = tmp_path / "radius.joblib"
    joblib.dump(model, artifact)
    app = make_app(model_store=empty_store)
    result = invoke(app, "add", str(artifact), "--name", "radius")
    assert result.exit_code == 0, result.output
    assert "warning: no typical row is known" in result.output
    assert "warning: predicting a made-up example row (no typical row is known) failed" in result.output
    assert "No neighbors found for test samples" in result.output
    verified = invoke(app, "verify")
    assert verified.exit_code == 0, verified.output
    assert verified.output.splitlines()[0] == "ok   radius 1"
    assert "No neighbors found for test samples" in verified.output

    client = make_app(model_store=empty_store).test_client()
    assert client.get("/ready").status_code == 200
    assert any(
        "No neighbors found" in note for note in client.get("/v1/models/radius").get_json()["warnings"]
    )
    answer = client.post("/v1/models/radius/predict", json={"features": [7.0, 7.0]}).get_json()
    assert answer["prediction"] == model.predict([[7.0, 7.0]])[0]


def test_add_numbers_versions_and_honours_an_explicit_one(
    make_app: Callable[..., Flask], empty_store: Path, churn_files: tuple[Path, Path]
) -> None:
    """Versions count up from 1; ``--version`` names one; the next number follows the highest."""
    artifact, _ = churn_files
    app = make_app(model_store=empty_store)
    for expected in ("1", "2"):
        result = invoke(app, "add", str(artifact), "--name", "churn")
        assert result.exit_code == 0, result.output
        assert f"added churn version {expected} " in result.output
    result = invoke(app, "add", str(artifact), "--name", "churn", "--version", "baseline")
    assert result.exit_code == 0, result.output
    result = invoke(app, "add", str(artifact), "--name", "churn", "--version", "10")
    assert result.exit_code == 0, result.output
    result = invoke(app, "add", str(artifact), "--name", "churn")
    assert result.exit_code == 0, result.output
    assert "added churn version 11 " in result.output

    store = ModelStore(empty_store)
    assert store.versions("churn") == ["baseline", "1", "2", "10", "11"]
    for version in store.versions("churn"):
        assert store.manifest("churn", version).version == version


def test_add_refuses_an_existing_version(
    make_app: Callable[..., Flask], churn_store: Path, churn_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Adding a version that exists fails, says so, and leaves the stored version untouched."""
    other = tmp_path / "other.joblib"
    joblib.dump(LogisticRegression().fit([[0.0], [1.0]], ["no", "yes"]), other)
    before = {path: path.read_bytes() for path in (churn_store / "churn" / "1").iterdir()}
    result = invoke(make_app(model_store=churn_store), "add", str(other), "--name", "churn", "--version", "1")
    assert result.exit_code != 0
    assert "already exists" in result.output
    assert {path: path.read_bytes() for path in (churn_store / "churn" / "1").iterdir()} == before
    assert store_tree(churn_store) == ["churn", "churn/1", "churn/1/model.joblib", "churn/1/model.json"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--name", "churn", "--target", "churned"], "--target needs --sample"),
        (["--name", "no/slashes"], "Invalid value for '--name'"),
        (["--name", "churn", "--version", "../1"], "Invalid value for '--version'"),
        (["--name", "nl\n"], "Invalid value for '--name'"),
        (["--name", "churn", "--version", "7\n"], "Invalid value for '--version'"),
    ],
    ids=["target-without-sample", "bad-name", "bad-version", "name-newline", "version-newline"],
)
def test_add_refuses_bad_options(
    make_app: Callable[..., Flask],
    empty_store: Path,
    churn_files: tuple[Path, Path],
    options: list[str],
    message: str,
) -> None:
    """Option mistakes are usage errors (exit 2) that store nothing."""
    artifact, _ = churn_files
    result = invoke(make_app(model_store=empty_store), "add", str(artifact), *options)
    assert result.exit_code == 2
    assert message in result.output
    assert store_tree(empty_store) == []


def test_add_refuses_a_file_that_is_not_a_pickle(
    make_app: Callable[..., Flask], empty_store: Path, tmp_path: Path
) -> None:
    """A text file is not loadable: a clear error, and nothing is stored."""
    junk = tmp_path / "model.joblib"
    junk.write_text("this is not a pickle\n")
    result = invoke(make_app(model_store=empty_store), "add", str(junk), "--name", "junk")
    assert result.exit_code == 1
    assert "is not a joblib/pickle file" in result.output
    assert store_tree(empty_store) == []


def test_add_refuses_a_transformer(make_app: Callable[..., Flask], empty_store: Path, tmp_path: Path) -> None:
    """A fitted StandardScaler cannot be served: a clear error, and nothing is stored."""
    scaler = tmp_path / "scaler.joblib"
    joblib.dump(StandardScaler().fit(np.arange(12.0).reshape(6, 2)), scaler)
    result = invoke(make_app(model_store=empty_store), "add", str(scaler), "--name", "scaler")
    assert result.exit_code == 1
    assert (
        "StandardScaler is a transformer that is not a classifier, regressor, outlier detector or "
        "clusterer, so it has no prediction to serve." in result.output
    )
    assert store_tree(empty_store) == []


@pytest.mark.parametrize("trusted", ["sample", "statistics"])
def test_add_removes_a_model_that_fails_on_a_trusted_row(
    make_app: Callable[..., Flask], store_path: Path, tmp_path: Path, trusted: str
) -> None:
    """A model that fails on rows of its sample, or on the means its scaler learned, is removed again,
    leaving the store as it was; the CLI quotes the estimator's own message."""
    X = np.arange(8.0).reshape(4, 2)
    artifact = tmp_path / "failing.joblib"
    options = []
    if trusted == "sample":
        joblib.dump(FailingClassifier().fit(X, [0, 1, 0, 1]), artifact)
        sample = tmp_path / "sample.csv"
        pd.DataFrame(X, columns=["a", "b"]).to_csv(sample, index=False)
        options = ["--sample", str(sample)]
    else:
        joblib.dump(make_pipeline(StandardScaler(), FailingClassifier()).fit(X, [0, 1, 0, 1]), artifact)
    before = store_tree(store_path)
    result = invoke(make_app(model_store=store_path), "add", str(artifact), "--name", "failing", *options)
    assert result.exit_code == 1
    assert "failed its check and was removed" in result.output
    assert "RuntimeError: this model always fails" in result.output
    assert "Traceback" not in result.output
    assert store_tree(store_path) == before
    assert make_app(model_store=store_path).test_client().get("/ready").status_code == 200


# --- models list / verify -----------------------------------------------------------


def test_list_shows_every_name_and_version(
    make_app: Callable[..., Flask], store_path: Path, churn_files: tuple[Path, Path]
) -> None:
    """Each stored version is one line; '*' marks the highest version of each name."""
    artifact, _ = churn_files
    app = make_app(model_store=store_path)
    for _ in range(2):
        assert invoke(app, "add", str(artifact), "--name", "churn").exit_code == 0
    result = invoke(app, "list")
    assert result.exit_code == 0, result.output
    listed = []
    for line in result.output.splitlines():
        mark, rest = line[0], line[1:].split()
        listed.append((mark, rest[0], rest[1], rest[2]))
    assert listed == [
        ("*", "breast_cancer", "1", "classification"),
        (" ", "churn", "1", "classification"),
        ("*", "churn", "2", "classification"),
        ("*", "diabetes", "1", "regression"),
        ("*", "iris", "1", "classification"),
    ]


def test_list_on_an_empty_store(make_app: Callable[..., Flask], empty_store: Path) -> None:
    """An empty store is listed as such, without failing."""
    result = invoke(make_app(model_store=empty_store), "list")
    assert result.exit_code == 0
    assert result.output.strip() == f"{empty_store}: no models"


def test_verify_passes_on_the_demo_store(make_app: Callable[..., Flask], store_path: Path) -> None:
    """Every demo model hashes, loads and predicts: exit 0, one 'ok' line each."""
    result = invoke(make_app(model_store=store_path), "verify")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["ok   breast_cancer 1", "ok   diabetes 1", "ok   iris 1"]


def test_verify_fails_on_a_changed_artifact(make_app: Callable[..., Flask], store_path: Path) -> None:
    """One flipped byte in an artifact: exit 1, naming the model and the hash mismatch."""
    app = make_app(model_store=store_path)  # built before the change: it loaded the good bytes
    artifact = store_path / "iris" / "1" / "model.joblib"
    data = bytearray(artifact.read_bytes())
    data[-10] ^= 0x01
    artifact.write_bytes(bytes(data))
    result = invoke(app, "verify")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1
    assert failed[0].startswith("FAIL iris 1: ")
    assert "SHA-256" in failed[0]
    assert hashlib.sha256(bytes(data)).hexdigest() in failed[0]
    assert "ok   diabetes 1" in lines
    assert "1 of 3 model versions failed" in result.output


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda manifest: "{ not json", "is not valid JSON"),
        (lambda manifest: json.dumps({k: v for k, v in manifest.items() if k != "task"}), "is malformed"),
        (lambda manifest: json.dumps({**manifest, "features": []}), "is malformed"),
    ],
    ids=["not-json", "no-task", "no-features"],
)
def test_verify_fails_on_a_malformed_manifest(
    make_app: Callable[..., Flask],
    store_path: Path,
    damage: Callable[[dict[str, Any]], str],
    message: str,
) -> None:
    """A manifest that is not JSON or breaks the schema: exit 1, naming the model and the manifest."""
    manifest_path = store_path / "diabetes" / "1" / "model.json"
    manifest_path.write_text(damage(read_json(manifest_path)))
    result = invoke(make_app(model_store=store_path), "verify")
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1
    assert failed[0].startswith("FAIL diabetes 1: manifest diabetes/1/model.json ")
    assert message in failed[0]


def test_verify_fails_on_an_empty_store(make_app: Callable[..., Flask], empty_store: Path) -> None:
    """Nothing to verify is a failure too: the store was probably misnamed."""
    result = invoke(make_app(model_store=empty_store), "verify")
    assert result.exit_code == 1
    assert "holds no models" in result.output


# --- models demo -------------------------------------------------------------------


def test_demo_if_empty_leaves_a_store_with_models_alone(
    make_app: Callable[..., Flask], store_path: Path
) -> None:
    """--if-empty trains nothing into a store that holds any model; without it, only what is missing."""
    shutil.rmtree(store_path / "diabetes")
    kept = {path: path.read_bytes() for path in store_path.rglob("*") if path.is_file()}
    app = make_app(model_store=store_path)
    result = invoke(app, "demo", "--if-empty")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"{store_path} holds models (breast_cancer, iris); no demo models trained"
    )
    assert ModelStore(store_path).names() == ["breast_cancer", "iris"]

    result = invoke(app, "demo")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"iris: already in {store_path}, kept (use --force to retrain)"
    assert lines[1] == f"diabetes: trained and stored in {store_path / 'diabetes' / '1'}"
    assert lines[2].startswith("breast_cancer: already in ")
    assert {path: path.read_bytes() for path in kept} == kept
    assert invoke(app, "verify").exit_code == 0


def test_demo_force_retrains_a_damaged_demo_model(make_app: Callable[..., Flask], store_path: Path) -> None:
    """--force replaces each demo model's version 1, so a damaged one is whole again."""
    artifact = store_path / "iris" / "1" / "model.joblib"
    artifact.write_bytes(b"not a model")
    app = make_app(model_store=store_path)
    assert invoke(app, "verify").exit_code == 1
    result = invoke(app, "demo", "--force")
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines()] == DEMO_NAMES
    assert "kept" not in result.output
    assert invoke(app, "verify").exit_code == 0
    assert ModelStore(store_path).versions("iris") == ["1"]


# --- The real command ---------------------------------------------------------------


def run_flask(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``flask --app wsgi models ...`` in the repository, with SERVICE_MODEL_STORE set to ``store``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SERVICE_", "FLASK_"))}
    env["SERVICE_MODEL_STORE"] = str(store)
    return run_in_repo([str(FLASK), "--app", "wsgi", "models", *args], env)


def test_real_command_lists_the_store_named_by_the_environment(store_path: Path) -> None:
    """``flask --app wsgi models list`` reads the store that SERVICE_MODEL_STORE names."""
    shutil.rmtree(store_path / "diabetes")
    result = run_flask(store_path, "list")
    assert result.returncode == 0, result.stderr
    names = [line[1:].split()[0] for line in result.stdout.splitlines()]
    assert names == ["breast_cancer", "iris"]


def test_real_command_adds_to_an_empty_store(
    empty_store: Path, churn_files: tuple[Path, Path], make_app: Callable[..., Flask]
) -> None:
    """The app builds over an empty store, so the real command can add the first model to it."""
    artifact, sample = churn_files
    result = run_flask(
        empty_store, "add", str(artifact), "--name", "churn", "--sample", str(sample), "--target", "churned"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "added churn version 1" in result.stdout
    assert ModelStore(empty_store).versions("churn") == ["1"]
    ready = make_app(model_store=empty_store).test_client().get("/ready")
    assert ready.status_code == 200
    assert ready.get_json()["models"]["churn"]["ready"] is True


def test_real_command_trains_the_demo_models_into_an_empty_store(
    empty_store: Path, make_app: Callable[..., Flask]
) -> None:
    """What ``make serve`` runs before Gunicorn: the app builds over the empty store and fills it."""
    result = run_flask(empty_store, "demo", "--if-empty")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == DEMO_NAMES
    assert ModelStore(empty_store).names() == ["breast_cancer", "diabetes", "iris"]
    ready = make_app(model_store=empty_store).test_client().get("/ready")
    assert ready.status_code == 200, ready.get_json()


# --- models add --eval: held-out metrics ------------------------------------------------


@pytest.fixture
def churn_split(churn_frame: pd.DataFrame, tmp_path: Path) -> tuple[Pipeline, Path, Path, pd.DataFrame]:
    """A churn pipeline fitted on the first 200 customers: (pipeline, its file, the training rows as a
    sample CSV, the 100 held-out customers)."""
    train, test = churn_frame.iloc[:200], churn_frame.iloc[200:]
    pipeline = churn_model().fit(train[FEATURES], train["churned"])
    artifact = tmp_path / "churn.joblib"
    joblib.dump(pipeline, artifact)
    sample = tmp_path / "train.csv"
    train.to_csv(sample, index=False)
    return pipeline, artifact, sample, test


def test_eval_measures_held_out_metrics(
    make_app: Callable[..., Flask], empty_store: Path, churn_split: Any, tmp_path: Path
) -> None:
    """``--eval`` measures the metrics on its file, not on the sample, and every answer labels them so."""
    pipeline, artifact, sample, test = churn_split
    held_out = tmp_path / "held_out.csv"
    test.to_csv(held_out, index=False)
    app = make_app(model_store=empty_store)
    options = ["--sample", str(sample), "--eval", str(held_out), "--target", "churned"]
    result = invoke(app, "add", str(artifact), "--name", "churn", *options)
    assert result.exit_code == 0, result.output
    manifest = read_json(empty_store / "churn" / "1" / "model.json")
    expected = accuracy_score(test["churned"], pipeline.predict(test[FEATURES]))
    assert manifest["metrics"] == {"accuracy": pytest.approx(expected, abs=1e-12)}
    assert manifest["evaluation"] == {"data": "held_out", "rows": 100, "source": "held_out.csv"}
    assert manifest["typical_row"] == {"kind": "sample", "source": "train.csv"}

    client = make_app(model_store=empty_store).test_client()
    assert client.get("/v1/models/churn").get_json()["metrics_label"] == "measured on 100 held-out rows"
    home = {model["name"]: model for model in client.get("/").get_json()["models"]}
    assert home["churn"]["metrics_label"] == "measured on 100 held-out rows"


def test_metrics_from_the_sample_are_labelled_as_such(
    make_app: Callable[..., Flask], churn_store: Path, churn_frame: pd.DataFrame
) -> None:
    manifest = read_json(churn_store / "churn" / "1" / "model.json")
    assert manifest["evaluation"] == {
        "data": "sample",
        "rows": len(churn_frame),
        "source": "churn_sample.csv",
    }
    metadata = make_app(model_store=churn_store).test_client().get("/v1/models/churn").get_json()
    assert metadata["metrics_label"] == (
        "measured on the 300-row sample given when the model was added, which may include training rows"
    )


def test_eval_measures_a_regressor_fitted_on_arrays_without_a_sample(
    make_app: Callable[..., Flask], empty_store: Path, tmp_path: Path
) -> None:
    """A model fitted on arrays has made-up feature names (x0, x1, ...): the file's columns go in order."""
    frame = load_diabetes(as_frame=True).frame
    train, test = frame.iloc[:300], frame.iloc[300:]
    features = [column for column in frame.columns if column != "target"]
    model = Ridge().fit(train[features].to_numpy(), train["target"])
    artifact = tmp_path / "ridge.joblib"
    joblib.dump(model, artifact)
    held_out = tmp_path / "held_out.csv"
    test.to_csv(held_out, index=False)
    result = invoke(
        make_app(model_store=empty_store),
        "add",
        str(artifact),
        "--name",
        "ridge",
        "--eval",
        str(held_out),
        "--target",
        "target",
    )
    assert result.exit_code == 0, result.output
    manifest = read_json(empty_store / "ridge" / "1" / "model.json")
    predicted = model.predict(test[features].to_numpy())
    assert manifest["metrics"] == {
        "r2": pytest.approx(r2_score(test["target"], predicted), abs=1e-12),
        "mae": pytest.approx(mean_absolute_error(test["target"], predicted), abs=1e-12),
    }
    assert manifest["evaluation"] == {"data": "held_out", "rows": len(test), "source": "held_out.csv"}


def test_eval_measures_a_model_with_several_outputs_on_its_named_targets(
    make_app: Callable[..., Flask], empty_store: Path, tmp_path: Path
) -> None:
    """--target a,b,c names the targets; the sample's copies of them are set aside, not features."""
    exercise, body = load_linnerud(return_X_y=True, as_frame=True)
    both = pd.concat([exercise, body], axis=1)
    train, test = both.iloc[:14], both.iloc[14:]
    model = Ridge().fit(train[exercise.columns], train[body.columns])
    artifact, sample, held_out = tmp_path / "ridge.joblib", tmp_path / "train.csv", tmp_path / "test.csv"
    joblib.dump(model, artifact)
    train.to_csv(sample, index=False)
    test.to_csv(held_out, index=False)
    app = make_app(model_store=empty_store)
    targets = ",".join(body.columns)
    options = ["--sample", str(sample), "--eval", str(held_out), "--target", targets]
    result = invoke(app, "add", str(artifact), "--name", "body", *options)
    assert result.exit_code == 0, result.output
    manifest = read_json(empty_store / "body" / "1" / "model.json")
    assert manifest["targets"] == list(body.columns)
    assert [feature["name"] for feature in manifest["features"]] == list(exercise.columns)
    predicted = model.predict(test[exercise.columns])
    assert manifest["metrics"] == {
        "r2": pytest.approx(r2_score(test[body.columns], predicted), abs=1e-12),
        "mae": pytest.approx(mean_absolute_error(test[body.columns], predicted), abs=1e-12),
    }
    assert manifest["evaluation"] == {"data": "held_out", "rows": len(test), "source": "test.csv"}
    short = invoke(app, "add", str(artifact), "--name", "body", "--eval", str(held_out), "--target", "Weight")
    assert short.exit_code == 1
    assert "the model predicts 3 outputs per row; --target names 1 column" in short.output


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda frame: frame.drop(columns=["churned"]), "held_out.csv has no target column 'churned'"),
        (
            lambda frame: frame.drop(columns=["tenure"]),
            "held_out.csv lacks the model's feature columns tenure",
        ),
        (
            lambda frame: frame.assign(churned=frame["churned"].where(frame.index % 7 != 0)),
            "has 15 empty cells",
        ),
        (
            lambda frame: frame.assign(churned=frame["churned"].map({"yes": "Y", "no": "N"})),
            "holds labels the model does not predict: N, Y (its classes: no, yes)",
        ),
        (lambda frame: frame.iloc[:0], "held_out.csv has no rows"),
        (
            lambda frame: frame.assign(tenure="long"),
            "predicting the rows to measure metrics failed: ValueError:",
        ),
    ],
    ids=["no-target", "missing-feature", "empty-labels", "unknown-labels", "no-rows", "not-numbers"],
)
def test_eval_refuses_a_file_that_does_not_fit(
    make_app: Callable[..., Flask],
    empty_store: Path,
    churn_split: Any,
    tmp_path: Path,
    damage: Callable[[pd.DataFrame], pd.DataFrame],
    message: str,
) -> None:
    """A held-out file that does not fit the model is a clear error (no traceback), and nothing is stored."""
    _, artifact, sample, test = churn_split
    held_out = tmp_path / "held_out.csv"
    damage(test.reset_index(drop=True)).to_csv(held_out, index=False)
    options = ["--sample", str(sample), "--eval", str(held_out), "--target", "churned"]
    result = invoke(make_app(model_store=empty_store), "add", str(artifact), "--name", "churn", *options)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert store_tree(empty_store) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--eval", "{held_out}"], "--eval needs --target"),
        (["--target", "churned"], "--target needs --sample or --eval"),
    ],
)
def test_eval_and_target_need_each_other(
    make_app: Callable[..., Flask],
    empty_store: Path,
    churn_split: Any,
    tmp_path: Path,
    options: list[str],
    message: str,
) -> None:
    _, artifact, _, test = churn_split
    held_out = tmp_path / "held_out.csv"
    test.to_csv(held_out, index=False)
    options = [option.format(held_out=held_out) for option in options]
    result = invoke(make_app(model_store=empty_store), "add", str(artifact), "--name", "churn", *options)
    assert result.exit_code == 2
    assert message in result.output
    assert store_tree(empty_store) == []


def test_eval_refuses_a_file_that_is_not_csv(
    make_app: Callable[..., Flask], empty_store: Path, churn_split: Any, tmp_path: Path
) -> None:
    _, artifact, _, _ = churn_split
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = invoke(
        make_app(model_store=empty_store),
        "add",
        str(artifact),
        "--name",
        "churn",
        "--eval",
        str(empty),
        "--target",
        "churned",
    )
    assert result.exit_code == 1
    assert f"{empty} cannot be read as a CSV file: No columns to parse from file" in result.output
    assert store_tree(empty_store) == []
