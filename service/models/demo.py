"""Train the demo models reproducibly from datasets that ship with scikit-learn.

Each model is fitted with fixed seeds on a fixed split, evaluated on the held-out
rows, and stored as version 1 with a manifest whose ranges and typical values
come from the training rows. ``flask --app wsgi models demo`` (``make train``,
``make serve``) trains them into the service's store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.models.introspect import describe_estimator
from service.models.manifest import Evaluation, TypicalRow
from service.models.store import ModelStore

SEED = 42
VERSION = "1"


@dataclass(frozen=True)
class Demo:
    name: str
    description: str
    load: Callable[[], tuple[pd.DataFrame, np.ndarray, str]]
    estimator: Callable[[], Any]
    descriptions: dict[str, tuple[str | None, str | None]]  # feature -> (description, unit)


def _iris() -> tuple[pd.DataFrame, np.ndarray, str]:
    bunch = datasets.load_iris(as_frame=True)
    frame = bunch.data.set_axis(["sepal_length", "sepal_width", "petal_length", "petal_width"], axis=1)
    return frame, bunch.target_names[bunch.target.to_numpy()], "sklearn.datasets.load_iris"


def _diabetes() -> tuple[pd.DataFrame, np.ndarray, str]:
    bunch = datasets.load_diabetes(as_frame=True, scaled=False)
    frame = bunch.data.astype({"age": "int64", "sex": "int64"})
    return frame, bunch.target.to_numpy(), "sklearn.datasets.load_diabetes(scaled=False)"


def _breast_cancer() -> tuple[pd.DataFrame, np.ndarray, str]:
    bunch = datasets.load_breast_cancer(as_frame=True)
    frame = bunch.data.set_axis([c.replace(" ", "_") for c in bunch.data.columns], axis=1)
    return frame, bunch.target_names[bunch.target.to_numpy()], "sklearn.datasets.load_breast_cancer"


DEMOS = (
    Demo(
        name="iris",
        description="Iris species from sepal and petal measurements (logistic regression).",
        load=_iris,
        estimator=lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED)
        ),
        descriptions={
            "sepal_length": ("Sepal length", "cm"),
            "sepal_width": ("Sepal width", "cm"),
            "petal_length": ("Petal length", "cm"),
            "petal_width": ("Petal width", "cm"),
        },
    ),
    Demo(
        name="diabetes",
        description="Disease progression one year after baseline (gradient boosting regressor).",
        load=_diabetes,
        estimator=lambda: GradientBoostingRegressor(
            n_estimators=200, max_depth=2, learning_rate=0.05, random_state=SEED
        ),
        descriptions={
            "age": ("Age", "years"),
            "sex": ("Sex, coded 1 or 2", None),
            "bmi": ("Body mass index", "kg/m²"),
            "bp": ("Average blood pressure", "mm Hg"),
            "s1": ("Total serum cholesterol (tc)", "mg/dL"),
            "s2": ("Low-density lipoproteins (ldl)", "mg/dL"),
            "s3": ("High-density lipoproteins (hdl)", "mg/dL"),
            "s4": ("Total cholesterol / HDL (tch)", None),
            "s5": ("Log of serum triglycerides level (ltg)", None),
            "s6": ("Blood sugar level (glu)", "mg/dL"),
        },
    ),
    Demo(
        name="breast_cancer",
        description="Malignant or benign tumour from 30 cell-nucleus measurements (200-tree random forest).",
        load=_breast_cancer,
        estimator=lambda: RandomForestClassifier(n_estimators=200, random_state=SEED),
        descriptions={},
    ),
)


def _metrics(estimator: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    predicted = estimator.predict(X)
    if hasattr(estimator, "classes_"):
        metrics = {
            "accuracy": accuracy_score(y, predicted),
            "f1_macro": f1_score(y, predicted, average="macro"),
        }
        probabilities = estimator.predict_proba(X)
        if len(estimator.classes_) == 2:
            metrics["roc_auc"] = roc_auc_score(y, probabilities[:, 1], labels=estimator.classes_)
        return {key: round(float(value), 4) for key, value in metrics.items()}
    return {
        "r2": round(float(r2_score(y, predicted)), 4),
        "mae": round(float(mean_absolute_error(y, predicted)), 4),
    }


def train(demo: Demo, store: ModelStore) -> Path:
    """Fit, evaluate and store one demo model as version 1; returns its directory."""
    frame, target, source = demo.load()
    stratify = target if target.dtype.kind in "OUS" else None
    X_train, X_test, y_train, y_test = train_test_split(
        frame, target, test_size=0.25, random_state=SEED, stratify=stratify
    )
    # Fitted on plain arrays: the served model then predicts on a numpy matrix
    # in manifest order, the cheapest input scikit-learn takes.
    estimator = demo.estimator().fit(X_train.to_numpy(), y_train)
    manifest = describe_estimator(
        estimator,
        name=demo.name,
        version=VERSION,
        sample=X_train,
        description=demo.description,
        notes=demo.descriptions,
        metrics=_metrics(estimator, X_test.to_numpy(), y_test),
        evaluation=Evaluation(
            "held_out", rows=len(X_test), source=f"{source}: the rows held out by the split (seed {SEED})"
        ),
        dataset={
            "name": demo.name,
            "source": source,
            "rows": len(frame),
            "train_rows": len(X_train),
            "test_rows": len(X_test),
            "split_seed": SEED,
        },
    )
    manifest = replace(
        manifest, typical_row=TypicalRow("training_data", f"the {len(X_train)} training rows of {source}")
    )
    with tempfile.TemporaryDirectory() as scratch:
        artifact = Path(scratch) / "model.joblib"
        joblib.dump(estimator, artifact)
        return store.add(artifact, manifest)
